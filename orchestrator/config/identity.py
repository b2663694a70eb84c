"""Content-addressed identities of every stage's output.

Each stage's key hashes exactly the config that shapes its result plus the key of its input, so
trials that share a tokenizer share its checkpoint and latent cache, and a rerun finds finished
stages. Execution-only settings (workers, batch sizes of inference jobs, logging and checkpoint
cadence, ZeRO stage, compile) are left out: they change how fast, not what.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.loading import content_hash, to_dict
from orchestrator.config.schema import ExperimentConfig, TrainingConfig
from orchestrator.storage.store import content_digest

_EXECUTION_ONLY_TRAINING = (
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "zero_stage",
    "offload_optimizer",
    "activation_checkpointing",
    "compile",
)


def _training_identity(t: TrainingConfig) -> dict:
    data = to_dict(t)
    for key in _EXECUTION_ONLY_TRAINING:
        data.pop(key)
    return _without_unset(data, "time_shift")


def _without_unset(data: dict, *keys: str) -> dict:
    """Drop keys added after stage keys existed while they hold their null default, so every
    existing point keeps its key (and its outputs)."""
    return {k: v for k, v in data.items() if not (k in keys and v is None)}


def _without(section: object, *keys: str) -> dict:
    data = to_dict(section)
    for key in keys:
        data.pop(key)
    return data


def file_identity(path: str) -> str:
    """A file from outside by its content, so a changed file is a new point and a moved one is
    not. An unreadable file (a dry run away from the cluster) keys by its path; a real run
    stops before any stage (`storage.pretrained.check_inputs`)."""
    digest = content_digest(path)
    return f"sha256:{digest}" if digest is not None else f"unread:{path}"


@dataclass(frozen=True)
class StageKeys:
    dataset: str
    tokenizer: str
    tokenizer_eval: str
    cache: str
    generator: str
    generator_eval: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def stage_keys(cfg: ExperimentConfig) -> StageKeys:
    """Keys of a *resolved* config's stage outputs (see `validation.resolve`)."""
    dataset = content_hash(_without(cfg.dataset, "max_skip_fraction"))
    tok = cfg.tokenizer
    # Without VF loss the margins and weights are inert: leave them out so they cannot split
    # one baseline tokenizer into several identical ones.
    vf = to_dict(tok.vf) if tok.vf.enabled else {"foundation": "none"}
    tokenizer_section = {
        "arch": to_dict(tok.arch),
        "vf": vf,
        "loss": to_dict(tok.loss),
        "optimizer": to_dict(tok.optimizer),
        "training": _training_identity(tok.training),
        # `train: all` (the default) is left out so staged recipes keep their keys.
        "stages": [
            {k: v for k, v in stage.items() if not (k == "train" and v == "all")}
            for stage in to_dict(tok.stages)
        ],
    }
    if tok.family != "vavae":  # the default family keeps every existing key
        tokenizer_section["family"] = tok.family
    if tok.decoder is not None:
        tokenizer_section["decoder"] = to_dict(tok.decoder)
    if tok.init_from is not None:
        tokenizer_section["init_from"] = file_identity(tok.init_from)
    if tok.pretrained is not None:
        # Nothing is trained: the file and the architecture it is loaded into are the tokenizer.
        # The dataset stays in the key because evaluation and cache keys derive from this one.
        pretrained = {"pretrained": file_identity(tok.pretrained), "arch": to_dict(tok.arch)}
        tokenizer = content_hash({"dataset": dataset, "tokenizer": pretrained})
    else:
        tokenizer = content_hash(
            {"dataset": dataset, "seed": cfg.seed, "tokenizer": tokenizer_section}
        )
    ev = cfg.evaluation
    recon_eval = {
        "images": ev.tokenizer_num_images,
        "inception": ev.inception_weights,
        "uniformity": ev.uniformity_samples,
        "fd_dinov2": ev.fd_dinov2_weights,
        "proxy_train_images": ev.proxy_train_images,
        # v2: metrics named with their sample count, FD_DINOv2 from the CLS token; v3: the gFID
        # proxies (iFID, LNC, LDS).
        "protocol": "v3",
        "seed": ev.seed,
    }
    tokenizer_eval = content_hash({"tokenizer": tokenizer, "eval": recon_eval})
    cache = content_hash(
        {
            "tokenizer": tokenizer,
            # `mode` added later: left out at its default so existing caches keep their keys.
            "cache": _without(
                cfg.cache,
                "batch_size",
                "num_actors",
                *(("mode",) if cfg.cache.mode == "cached" else ()),
            ),
        }
    )
    gen = cfg.generator
    generator_section = {
        "objective": gen.objective,
        "model": _without_unset(to_dict(gen.model), "head"),
        "transport": to_dict(gen.transport),
        "optimizer": to_dict(gen.optimizer),
        "ema": to_dict(gen.ema),
        "training": _training_identity(gen.training),
        "latent_norm": gen.latent_norm,
        "latent_multiplier": gen.latent_multiplier,
    }
    if gen.pretrained is not None:
        # No cache and no training: the file, its latent statistics and how it is sampled.
        generator_section = {
            "pretrained": file_identity(gen.pretrained),
            "latent_stats": file_identity(gen.latent_stats_file) if gen.latent_norm else None,
            "model": _without_unset(to_dict(gen.model), "head"),
            "latent_norm": gen.latent_norm,
            "latent_multiplier": gen.latent_multiplier,
        }
        generator = content_hash({"tokenizer": tokenizer, "generator": generator_section})
    else:
        generator = content_hash({"cache": cache, "seed": cfg.seed, "generator": generator_section})
    gen_eval = {
        "sampler": to_dict(cfg.sampler),
        "eval": _without(
            ev,
            "batch_size",
            "num_workers",
            "tokenizer_num_images",
            "uniformity_samples",
            "fd_dinov2_weights",
        ),
        # v2: ADM protocol (5K-sample IS splits, seeded precision/recall reference, k = 3) and
        # metrics named with their sample count.
        "protocol": "v2",
    }
    generator_eval = content_hash({"generator": generator, "eval": gen_eval})
    return StageKeys(dataset, tokenizer, tokenizer_eval, cache, generator, generator_eval)
