"""Checkpoints from outside as frontier points: read, check against the config, import.

One reader for every tokenizer file a config names (`tokenizer.pretrained`, `tokenizer.init_from`):
the released VA-VAE `.pt`, SD-VAE in LDM or diffusers keys, MAR's `kl16.ckpt`, our own exports;
its layout is detected from the keys (`workloads.vavae.checkpoint.read_tokenizer_checkpoint`)
and its architecture checked against `tokenizer.arch` key by key. The released LightningDiT `.pt`
(`ema` entry) and its `latents_stats.pt` are read the same way for `generator.pretrained`.

`check_inputs` runs every check before a sweep starts (bad input = `ConfigError`, exit 2, nothing
written). `import_tokenizer` / `import_generator` then store the weights where a trained stage
would have exported them, with the stage's DONE marker, so evaluation, the latent cache and
generation read them exactly as they read trained ones.
"""

from __future__ import annotations

import torch

from orchestrator.config import ConfigError, ExperimentConfig, stage_keys, to_dict
from orchestrator.storage.artifacts import EXPORT_DIR, Artifacts
from orchestrator.storage.models import autoencoder_kwargs, generator_kwargs
from orchestrator.storage.store import Storage, content_digest, open_input

LATENT_STATS = "latent_stats.json"


def read_file(key: str, uri: str) -> bytes:
    try:
        with open_input(uri) as stream:
            return stream.read()
    except (OSError, ValueError) as error:  # pyarrow: FileNotFoundError, ArrowInvalid
        raise ConfigError(key, f"cannot read {uri} ({str(error).splitlines()[0]})") from None


def read_tokenizer(cfg: ExperimentConfig, key: str, uri: str):
    """The `TokenizerCheckpoint` of `uri`, checked against `tokenizer.arch` (ConfigError at `key`
    naming the file, its layout and architecture, and at most five differing keys)."""
    from workloads.vavae import AutoencoderKL
    from workloads.vavae.checkpoint import (
        INFERENCE_PREFIXES,
        architecture_mismatch,
        describe_autoencoder,
        read_tokenizer_checkpoint,
    )

    try:
        checkpoint = read_tokenizer_checkpoint(read_file(key, uri), uri)
    except ValueError as error:
        raise ConfigError(key, str(error)) from None
    # The latent channels first: a file of another width is the common mistake (fine-tuning the
    # d32 release into a d16 point), and the one the generator and cache would trip over.
    post = checkpoint.tensors.get("post_quant_conv.weight")
    channels = cfg.tokenizer.arch.embed_dim
    if post is not None and post.ndim == 4 and post.shape[1] != channels:
        raise ConfigError(
            key,
            f"{uri} makes {post.shape[1]}-channel latents but tokenizer.arch.embed_dim is "
            f"{channels}",
        )
    with torch.device("meta"):  # keys and shapes only: no memory, no init time
        model = AutoencoderKL(**autoencoder_kwargs(cfg))
    mismatch = architecture_mismatch(model, checkpoint.tensors, INFERENCE_PREFIXES)
    if mismatch is not None:
        raise ConfigError(
            key,
            f"{uri} ({checkpoint.layout} layout, {describe_autoencoder(checkpoint.tensors)}) is "
            f"another architecture than tokenizer.arch "
            f"({describe_autoencoder(model.state_dict())}): {mismatch}",
        )
    return checkpoint


def read_generator(cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """The EMA (else `model`, else bare) LightningDiT state dict of `generator.pretrained`,
    checked against `generator.model` and the tokenizer's latent channels."""
    from workloads.dit import LightningDiT_models
    from workloads.dit.checkpoint import select_state_dict
    from workloads.vavae.checkpoint import architecture_mismatch, parse_weights

    key, uri = "generator.pretrained", cfg.generator.pretrained
    try:
        loaded = parse_weights(read_file(key, uri), uri)
        state, _ = select_state_dict(loaded, "ema")
    except (ValueError, KeyError, AttributeError) as error:
        raise ConfigError(key, f"{uri}: {str(error).strip(chr(34))}") from None
    channels = cfg.tokenizer.arch.embed_dim
    embed = state.get("x_embedder.proj.weight")
    if embed is not None and embed.ndim == 4 and embed.shape[1] != channels:
        raise ConfigError(
            key,
            f"{uri} takes {embed.shape[1]}-channel latents (in_channels) but the tokenizer's "
            f"latents have {channels} channels",
        )
    try:
        kwargs = generator_kwargs(cfg)
    except ValueError as error:
        raise ConfigError("dataset.num_classes", str(error)) from None
    with torch.device("meta"):
        model = LightningDiT_models[cfg.generator.model.name](**kwargs)
    mismatch = architecture_mismatch(model, state, ("",))
    if mismatch is not None:
        raise ConfigError(
            key, f"{uri} is another architecture than {cfg.generator.model.name}: {mismatch}"
        )
    return state


def read_latent_stats(cfg: ExperimentConfig):
    """`LatentStats` of a pretrained generator: the reference's `latents_stats.pt` ({mean, std},
    (1, C, 1, 1) each) with `generator.latent_multiplier`; identity without `latent_norm`."""
    from workloads.dit.latent_norm import LatentStats
    from workloads.vavae.checkpoint import parse_weights

    gen, channels = cfg.generator, cfg.tokenizer.arch.embed_dim
    if not gen.latent_norm:
        return LatentStats(torch.zeros(channels), torch.ones(channels), gen.latent_multiplier)
    uri = gen.latent_stats_file
    key = "generator.pretrained_latent_stats"
    try:
        loaded = parse_weights(read_file(key, uri), uri)
        stats = LatentStats(loaded["mean"], loaded["std"], gen.latent_multiplier)
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(key, f"{uri} is no latent statistics file ({error})") from None
    if stats.num_channels != channels:
        raise ConfigError(
            key,
            f"{uri} has statistics of {stats.num_channels} channels but the tokenizer's latents "
            f"have {channels}",
        )
    return stats


def check_inputs(configs: list[ExperimentConfig]) -> None:
    """Read and check every outside file the points name, each (file, architecture) once;
    raises ConfigError before anything is started or written."""
    seen: set[str] = set()
    for cfg in configs:
        tok, gen = cfg.tokenizer, cfg.generator
        for key, uri in (
            ("tokenizer.pretrained", tok.pretrained),
            ("tokenizer.init_from", tok.init_from),
        ):
            if uri is not None and _first(
                seen, key, uri, to_dict(tok.arch), cfg.dataset.resolution
            ):
                read_tokenizer(cfg, key, uri)
        if gen.pretrained is not None:
            shape = (to_dict(gen.model), tok.arch.embed_dim, cfg.dataset.num_classes)
            if _first(seen, "generator.pretrained", gen.pretrained, shape):
                read_generator(cfg)
            if _first(seen, "stats", gen.latent_stats_file, gen.latent_norm, tok.arch.embed_dim):
                read_latent_stats(cfg)


def _first(seen: set[str], *parts) -> bool:
    marker = repr(parts)
    if marker in seen:
        return False
    seen.add(marker)
    return True


def import_tokenizer(cfg: ExperimentConfig, storage: Storage) -> None:
    """Store `tokenizer.pretrained`'s inference weights as this point's tokenizer export."""
    from safetensors.torch import save as save_safetensors

    key = stage_keys(cfg).tokenizer
    artifacts, rel = Artifacts(storage), Artifacts.tokenizer(key)
    if artifacts.is_done(rel):
        return
    uri = cfg.tokenizer.pretrained
    checkpoint = read_tokenizer(cfg, "tokenizer.pretrained", uri)
    tensors = {k: v.contiguous() for k, v in checkpoint.inference().items()}
    storage.write_bytes(save_safetensors(tensors), Artifacts.tokenizer_weights(key))
    source = {"uri": uri, "sha256": content_digest(uri), "layout": checkpoint.layout}
    mark_imported(artifacts, storage, rel, source)


def mark_imported(artifacts: Artifacts, storage: Storage, rel: str, source: dict) -> None:
    """The `DONE.json` a training run would write, for a stage whose export came from a file."""
    artifacts.mark_done(
        rel,
        {
            "export_dir": storage.uri_for(rel, EXPORT_DIR),
            "metrics": {},
            "steps": 0,
            "pretrained": source,
        },
    )


def import_generator(cfg: ExperimentConfig, storage: Storage) -> dict:
    """Store `generator.pretrained`'s weights as this point's EMA export; returns its latent
    statistics (`LatentStats.to_dict()`), which generation de-normalises with."""
    from safetensors.torch import save as save_safetensors

    key = stage_keys(cfg).generator
    artifacts, rel = Artifacts(storage), Artifacts.generator(key)
    if artifacts.is_done(rel):
        return storage.read_json(rel, EXPORT_DIR, LATENT_STATS)
    uri = cfg.generator.pretrained
    state = read_generator(cfg)
    stats = read_latent_stats(cfg).to_dict()
    tensors = {k: v.contiguous() for k, v in state.items()}
    storage.write_bytes(save_safetensors(tensors), Artifacts.generator_ema_weights(key))
    storage.write_json(stats, rel, EXPORT_DIR, LATENT_STATS)
    source = {
        "uri": uri,
        "sha256": content_digest(uri),
        "latent_stats": cfg.generator.latent_stats_file if cfg.generator.latent_norm else None,
    }
    mark_imported(artifacts, storage, rel, source)
    return stats


def initial_tokenizer_weights(cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """Every tensor of `tokenizer.init_from` under our key names (read where it is needed)."""
    return read_tokenizer(cfg, "tokenizer.init_from", cfg.tokenizer.init_from).tensors
