"""Evaluation jobs on Ray: reconstruction metrics of a tokenizer, generation metrics of a DiT.

Both run as Ray Data actor pools (GPU actors where the cluster has GPUs, CPU actors otherwise);
the driver only aggregates per-image values and features. Every metric is written with the
spec that produced it (`metrics.json`, `eval_spec.json`) and labelled honestly: `gfid` is a real
FID only with Inception weights, and its label says how many samples (FID-10K, FID-50K, ...).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from orchestrator.config import ExperimentConfig, stage_keys
from orchestrator.evaluation.evaluators import INCEPTION, EvaluatorSpec
from orchestrator.evaluation.generate import generate_samples
from orchestrator.evaluation.naming import reports_lpips
from orchestrator.storage.artifacts import EMA_WEIGHTS, Artifacts
from orchestrator.storage.models import autoencoder_kwargs, read_weights
from orchestrator.storage.store import Storage
from orchestrator.sweep import resources

# ADM compares samples against a 10K-image reference batch for precision/recall.
PR_REFERENCE_IMAGES = 10_000
GRID_IMAGES = 8
GRID_SAMPLES = 64


def actor_pool(cfg: ExperimentConfig) -> tuple[ray.data.ActorPoolStrategy, dict, dict]:
    """(pool strategy, per-actor Ray resources, actor plan) of an evaluation stage: at most the
    trial's share of actors (`evaluation.num_workers`, default the whole share)."""
    chosen = resources.pool(cfg, "evaluation", cfg.evaluation.num_workers)
    actor = {"threads": chosen.threads, "device": chosen.device, "point": resources.point_id(cfg)}
    return ray.data.ActorPoolStrategy(size=chosen.size), chosen.ray_args, actor


def image_seed(seed: int, image_id: str) -> np.random.Generator:
    """Per-image randomness keyed by the image id: independent of batching and worker count."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(image_id.encode())]))
    )


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    from workloads.metrics.images import to_uint8

    return to_uint8(images).permute(0, 2, 3, 1).contiguous().numpy()


# --------------------------------------------------------------------------------------------
# Tokenizer: PSNR, SSIM, LPIPS, rFID (or rFD-proxy), FD in the foundation space, uniformity
# --------------------------------------------------------------------------------------------
class ReconstructionScorer:
    """Ray Data actor: encode, sample the posterior, decode, score each image."""

    def __init__(self, plan: dict):
        from workloads.vavae import LPIPS, AutoencoderKL, load_autoencoder_weights

        torch.set_num_threads(plan["threads"])
        resources.record_placement("tokenizer eval actor", plan["point"])
        self.device = torch.device(plan["device"])
        self.tokenizer = AutoencoderKL(**plan["autoencoder"])
        load_autoencoder_weights(self.tokenizer, ray.get(plan["weights"]))
        self.tokenizer.to(self.device).eval()
        self.features = EvaluatorSpec(**plan["evaluator"]).build(self.device)
        self.lpips = None
        if plan["lpips"]:
            weights, backbone = plan["lpips"]
            self.lpips = LPIPS(weights, backbone_weights=backbone).to(self.device)
        self.foundation = build_fd_foundation(plan["foundation"], self.device)
        self.grid = plan["grid"]
        self.seed = plan["seed"]

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from workloads.metrics.reconstruction import lpips_distance, psnr, ssim

        x = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(self.device)
        posterior = self.tokenizer.encode(x)
        rngs = [image_seed(self.seed, str(i)) for i in batch["image_id"]]
        # The reference reconstructs from posterior.sample(), not the mean.
        noise = torch.from_numpy(
            np.stack([r.standard_normal(posterior.mean.shape[1:]) for r in rngs])
        )
        z = posterior.mean + posterior.std * noise.to(posterior.mean)
        rec = self.tokenizer.decode(z)
        x_cpu, rec_cpu = x.float().cpu(), rec.float().cpu()
        key = "pool" if self.features.spec.kind == INCEPTION else "proxy"
        out = {
            "psnr": psnr(x_cpu, rec_cpu).numpy(),
            "ssim": ssim(x_cpu, rec_cpu).numpy(),
            "lpips": (
                lpips_distance(self.lpips, x, rec).cpu().numpy()
                if self.lpips is not None
                else np.full(len(x), np.nan)
            ),
            "feat_orig": self.features(to_uint8_nhwc(x_cpu))[key].astype(np.float32),
            "feat_rec": self.features(to_uint8_nhwc(rec_cpu))[key].astype(np.float32),
            # One latent pixel per image, at a seeded position (the Tab. 6 sampling unit).
            "pixel": latent_pixels(posterior.mean.float().cpu(), rngs),
        }
        if self.foundation is not None:
            out["fd_orig"] = self.foundation(x, self.grid).mean(dim=(2, 3)).float().cpu().numpy()
            out["fd_rec"] = (
                self.foundation(rec.clamp(-1, 1), self.grid).mean(dim=(2, 3)).float().cpu().numpy()
            )
        return out


def latent_pixels(mean: torch.Tensor, rngs: list[np.random.Generator]) -> np.ndarray:
    _, _, height, width = mean.shape
    rows = [int(r.integers(height)) for r in rngs]
    cols = [int(r.integers(width)) for r in rngs]
    return mean[torch.arange(len(rngs)), :, rows, cols].numpy()


def build_fd_foundation(plan: dict | None, device: torch.device):
    if plan is None:
        return None
    from workloads.foundation import build_foundation

    return build_foundation(plan["name"], plan["weights"], plan["input_norm"]).to(device)


def fd_foundation_plan(cfg: ExperimentConfig) -> dict | None:
    """FD in the foundation model's space (FD_DINOv2 as in EDM2), only with real weights."""
    vf = cfg.tokenizer.vf
    if (
        not cfg.evaluation.fd_foundation
        or vf.foundation in ("none", "standin")
        or vf.weights == "random_init"
    ):
        return None
    weights = "hub" if vf.weights == "auto" else vf.weights
    return {"name": vf.foundation, "weights": weights, "input_norm": vf.input_norm}


def evaluate_tokenizer(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    tokenizer_weights: str,
    evaluator: EvaluatorSpec,
) -> dict:
    """Reconstruction metrics on the first `tokenizer_num_images` validation images (cached)."""
    from orchestrator.data import image_dataset
    from workloads.metrics.frechet import fid_from_features
    from workloads.metrics.uniformity import latent_uniformity

    artifacts = Artifacts(storage)
    rel = Artifacts.tokenizer_eval(stage_keys(cfg).tokenizer_eval)
    if artifacts.is_done(rel):
        return artifacts.read_done(rel)
    ev = cfg.evaluation
    tensors, sha = read_weights(tokenizer_weights)
    compute, ray_args, actor = actor_pool(cfg)
    plan = {
        **actor,
        "autoencoder": autoencoder_kwargs(cfg),
        "weights": ray.put(tensors),
        "evaluator": evaluator.__dict__,
        "lpips": lpips_metric_weights(cfg),
        "foundation": fd_foundation_plan(cfg),
        "grid": (cfg.dataset.resolution // cfg.tokenizer.arch.downsample_factor,) * 2,
        "seed": ev.seed,
    }
    dataset = image_dataset(ingested, cfg, cfg.dataset.val_split, limit=ev.tokenizer_num_images)
    scored = dataset.map_batches(
        ReconstructionScorer,
        fn_constructor_kwargs={"plan": plan},
        batch_size=ev.batch_size,
        compute=compute,
        batch_format="numpy",
        **ray_args,
    )
    columns: dict[str, list[np.ndarray]] = {}
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for name, values in batch.items():
            columns.setdefault(name, []).append(values)
    data = {name: np.concatenate(parts) for name, parts in columns.items()}
    count = len(data["psnr"])
    recon_name = "rfid" if evaluator.kind == INCEPTION else "rfd_proxy"
    metrics = {
        "psnr": float(np.mean(data["psnr"])),
        "ssim": float(np.mean(data["ssim"])),
        recon_name: fid_from_features(data["feat_orig"], data["feat_rec"]),
    }
    if plan["lpips"]:
        metrics["lpips"] = float(np.mean(data["lpips"]))
    if "fd_orig" in data:
        metrics[f"rfd_{cfg.tokenizer.vf.foundation}"] = fid_from_features(
            data["fd_orig"], data["fd_rec"]
        )
    if ev.uniformity_samples and count > 3 * 30:
        pixels = data["pixel"][:, :, None, None]
        uniformity = latent_uniformity(
            pixels, num_samples=min(count, ev.uniformity_samples), seed=ev.seed
        )
        metrics.update(
            density_cv=uniformity["density_cv"],
            gini=uniformity["gini"],
            norm_entropy=uniformity["normalized_entropy"],
        )
    summary = {
        "metrics": metrics,
        "labels": {recon_name: f"{'rFID' if evaluator.kind == INCEPTION else 'rFD-proxy'}-{count}"},
        "spec": {
            "images": count,
            "split": cfg.dataset.val_split,
            "reconstruction": "posterior.sample() with per-image seeds",
            "evaluator": evaluator.identity,
            "tokenizer_sha256": sha,
            "lpips": plan["lpips"][0] if plan["lpips"] else "none",
            "seed": ev.seed,
        },
        "grid": reconstruction_grid(cfg, storage, rel, ingested, tensors),
    }
    storage.write_json(summary, rel, "metrics.json")
    artifacts.mark_done(rel, summary)
    return summary


def lpips_metric_weights(cfg: ExperimentConfig) -> list[str | None] | None:
    """[LPIPS weights, VGG16 backbone or None] when LPIPS is reported (`reports_lpips`)."""
    from orchestrator.storage.weights import lpips_files

    if not reports_lpips(cfg):
        return None
    loss = cfg.tokenizer.loss
    return list(lpips_files(loss.lpips_weights, loss.lpips_backbone_weights))


def reconstruction_grid(cfg, storage: Storage, rel: str, ingested, tensors) -> str:
    """Originals (top row) over reconstructions (bottom row) of the first validation images."""
    from orchestrator.data.images import load_images
    from orchestrator.data.parquet_io import read_table
    from orchestrator.evaluation.generate import sample_grid
    from workloads.vavae import AutoencoderKL, load_autoencoder_weights

    index = read_table(ingested.index_paths[cfg.dataset.val_split], columns=["path"]).slice(
        0, GRID_IMAGES
    )
    images = load_images(
        index.column("path").to_pylist(),
        resolution=cfg.dataset.resolution,
        max_pixels=cfg.dataset.max_image_pixels,
    )
    model = AutoencoderKL(**autoencoder_kwargs(cfg))
    load_autoencoder_weights(model, tensors)
    with torch.no_grad():
        x = torch.from_numpy(images)
        rec = model.decode(model.encode(x).mode())
    both = np.concatenate([to_uint8_nhwc(x), to_uint8_nhwc(rec)])
    return save_png(
        storage,
        sample_grid(both, np.zeros(len(both), np.int64), nrow=len(x)),
        rel,
        "reconstructions.png",
    )


def save_png(storage: Storage, image, *parts: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.write_bytes(buffer.getvalue(), *parts)
    return storage.uri_for(*parts)


# --------------------------------------------------------------------------------------------
# Generator: samples -> FID, sFID, IS, precision/recall (or FD-proxy, class consistency)
# --------------------------------------------------------------------------------------------
class FeatureScorer:
    """Ray Data actor: evaluator features of images (float CHW in [-1, 1]) or of sample chunks."""

    def __init__(self, plan: dict):
        torch.set_num_threads(plan["threads"])
        resources.record_placement("feature actor", plan["point"])
        self.features = EvaluatorSpec(**plan["evaluator"]).build(torch.device(plan["device"]))
        self.storage = Storage.from_uri(plan["storage"]) if plan.get("storage") else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "chunk" in batch:
            parts = [np.load(io.BytesIO(self.storage.read_bytes(rel))) for rel in batch["chunk"]]
            images = np.concatenate([p["images"] for p in parts])
            labels = np.concatenate([p["labels"] for p in parts])
        else:
            images = to_uint8_nhwc(torch.from_numpy(np.ascontiguousarray(batch["image"])))
            labels = batch["label"]
        return {**self.features(images), "label": labels}


def collect_features(
    dataset: ray.data.Dataset,
    cfg: ExperimentConfig,
    evaluator: EvaluatorSpec,
    storage: Storage,
    batch_size: int,
) -> dict[str, np.ndarray]:
    compute, ray_args, actor = actor_pool(cfg)
    plan = {
        **actor,
        "evaluator": evaluator.__dict__,
        "storage": storage.uri,
    }
    scored = dataset.map_batches(
        FeatureScorer,
        fn_constructor_kwargs={"plan": plan},
        batch_size=batch_size,
        compute=compute,
        batch_format="numpy",
        **ray_args,
    )
    columns: dict[str, list[np.ndarray]] = {}
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for name, values in batch.items():
            columns.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


@dataclass(frozen=True)
class Reference:
    stats: dict
    pool_features: np.ndarray | None
    identity: str


def reference_statistics(
    cfg: ExperimentConfig, storage: Storage, ingested, evaluator: EvaluatorSpec
) -> Reference:
    """Statistics of the reference split in the evaluator's space, cached by data + evaluator.

    An ADM reference batch (`evaluation.reference_stats`) supplies mu/sigma (and the sFID
    statistics); precision/recall always compare against our own reference split's features.
    """
    from orchestrator.data import image_dataset
    from workloads.metrics.frechet import FeatureStats

    split = cfg.evaluation.reference_split
    identity = f"{ingested.dataset_identity}/{split}|{evaluator.key}"
    rel = f"models/reference/{zlib.crc32(identity.encode()):08x}"
    if storage.exists(rel, "stats.npz"):
        cached = np.load(io.BytesIO(storage.read_bytes(rel, "stats.npz")))
        if str(cached["identity"]) != identity:
            raise ValueError(f"{storage.uri_for(rel)} holds statistics for {cached['identity']}")
        names = [k.removeprefix("mu_") for k in cached.files if k.startswith("mu_")]
        stats = {n: FeatureStats(cached[f"mu_{n}"], cached[f"sigma_{n}"]) for n in names}
        pool = cached["pr_features"] if "pr_features" in cached.files else None
    else:
        features = collect_features(
            image_dataset(ingested, cfg, split), cfg, evaluator, storage, cfg.evaluation.batch_size
        )
        names = ["pool", "spatial"] if evaluator.kind == INCEPTION else ["proxy"]
        stats = {n: FeatureStats.from_features(features[n]) for n in names}
        pr_name = "pool" if evaluator.kind == INCEPTION else "proxy"
        pool = features[pr_name][:PR_REFERENCE_IMAGES].astype(np.float32)
        arrays = {"identity": np.array(identity), "pr_features": pool}
        for n, s in stats.items():
            arrays[f"mu_{n}"], arrays[f"sigma_{n}"] = s.mu, s.sigma
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        storage.write_bytes(buffer.getvalue(), rel, "stats.npz")
    if cfg.evaluation.reference_stats:
        from workloads.metrics.reference import load_reference_npz

        stats = {**stats, **load_reference_npz(Path(cfg.evaluation.reference_stats))}
        identity = f"{Path(cfg.evaluation.reference_stats).name}|{evaluator.key}"
    return Reference(stats, pool, identity)


def eval_spec(
    cfg: ExperimentConfig, count: int, reference: Reference, evaluator: EvaluatorSpec, manifest
) -> dict:
    from workloads.metrics.eval_spec import EvalSpec, EvaluatorIdentity

    s = cfg.sampler
    spec = EvalSpec(
        sampler={
            "method": s.method,
            "steps": s.num_steps,
            "cfg_scale": s.cfg_scale,
            "cfg_interval_start": s.cfg_interval_start,
            "timestep_shift": s.timestep_shift,
            "cfg_channels": s.cfg_channels,
        },
        num_samples=count,
        label_policy=cfg.evaluation.label_policy,
        reference_stats_id=reference.identity,
        evaluator=EvaluatorIdentity(**evaluator.identity),
        seeds={"sampling": cfg.evaluation.seed, "rng_scheme": manifest.plan.get("rng_scheme", "")},
    )
    return spec.to_dict()


def evaluate_generator(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    *,
    generator_weights: str,
    tokenizer_weights: str,
    latent_stats: dict,
    evaluator: EvaluatorSpec,
) -> dict:
    """Generate `evaluation.num_samples` samples (distributed, resumable) and score them."""
    from orchestrator.evaluation.generate import sample_grid
    from workloads.metrics.eval_spec import metric_label
    from workloads.metrics.frechet import FeatureStats, frechet_distance
    from workloads.metrics.precision_recall import precision_recall
    from workloads.metrics.suite import inception_generation_metrics

    artifacts = Artifacts(storage)
    rel = Artifacts.generator_eval(stage_keys(cfg).generator_eval)
    if artifacts.is_done(rel):
        return artifacts.read_done(rel)
    manifest = generate_samples(
        cfg,
        storage,
        f"{rel}/samples",
        generator_weights=generator_weights,
        tokenizer_weights=tokenizer_weights,
        latent_stats=latent_stats,
    )
    reference = reference_statistics(cfg, storage, ingested, evaluator)
    features = sample_features(cfg, storage, f"{rel}/samples", manifest, evaluator)
    count = len(features["label"])
    if evaluator.kind == INCEPTION:
        raw = inception_generation_metrics(features, reference.stats, reference.pool_features)
        metrics = {"gfid": raw["fid"], "inception_score": raw["is"]}
        metrics.update({k: raw[k] for k in ("sfid", "precision", "recall") if k in raw})
        labels = {"gfid": metric_label("fid", count), "sfid": metric_label("sfid", count)}
    else:
        generated = features["proxy"]
        metrics = {
            "fd_proxy": frechet_distance(
                reference.stats["proxy"], FeatureStats.from_features(generated)
            ),
            "class_consistency": float(np.mean(features["pred"] == features["label"])),
        }
        precision, recall = precision_recall(reference.pool_features, generated.astype(np.float32))
        metrics.update(precision_proxy=precision, recall_proxy=recall)
        labels = {"fd_proxy": metric_label("fd_proxy", count)}
    spec = eval_spec(cfg, count, reference, evaluator, manifest)
    images, sample_labels = first_samples(storage, rel, manifest, GRID_SAMPLES)
    grid = save_png(storage, sample_grid(images, sample_labels, nrow=8), rel, "samples.png")
    summary = {
        "metrics": metrics,
        "labels": labels,
        "spec": spec,
        "grid": grid,
        "num_samples": count,
    }
    storage.write_json(spec, rel, "eval_spec.json")
    storage.write_json(summary, rel, "metrics.json")
    artifacts.mark_done(rel, summary)
    return summary


def sample_features(
    cfg: ExperimentConfig, storage: Storage, samples_rel: str, manifest, evaluator: EvaluatorSpec
) -> dict[str, np.ndarray]:
    chunks = [{"chunk": f"{samples_rel}/chunks/{name}"} for name in manifest.chunks]
    return collect_features(ray.data.from_items(chunks), cfg, evaluator, storage, batch_size=1)


def intermediate_rel(cfg: ExperimentConfig, step: int) -> str:
    return (
        f"{Artifacts.generator_eval(stage_keys(cfg).generator_eval)}/intermediate/step-{step:08d}"
    )


def stored_intermediate_metric(
    cfg: ExperimentConfig, storage: Storage, step: int
) -> dict[str, float] | None:
    rel = intermediate_rel(cfg, step)
    return storage.read_json(rel, "metrics.json") if storage.exists(rel, "metrics.json") else None


def intermediate_generator_metric(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    *,
    step: int,
    ema_state: dict[str, torch.Tensor],
    tokenizer_weights: str,
    latent_stats: dict,
    evaluator: EvaluatorSpec,
) -> dict[str, float]:
    """`fd_intermediate`: FD of `evaluation.intermediate_samples` samples from the EMA weights at
    generator `step`, in the evaluator's feature space (Inception pool3, or the proxy's). Cheap
    and noisy (few samples), good for ranking trials against each other at equal steps, which
    is all ASHA asks of it. Stored per step, so a restarted trial re-reports the same value."""
    from safetensors.torch import save as save_safetensors

    from workloads.metrics.frechet import FeatureStats, frechet_distance

    stored = stored_intermediate_metric(cfg, storage, step)
    if stored is not None:
        return stored
    rel = intermediate_rel(cfg, step)
    tensors = {name: value.detach().contiguous() for name, value in ema_state.items()}
    storage.write_bytes(save_safetensors(tensors), rel, EMA_WEIGHTS)
    manifest = generate_samples(
        cfg,
        storage,
        f"{rel}/samples",
        generator_weights=storage.uri_for(rel, EMA_WEIGHTS),
        tokenizer_weights=tokenizer_weights,
        latent_stats=latent_stats,
        num_samples=cfg.evaluation.intermediate_samples,
    )
    reference = reference_statistics(cfg, storage, ingested, evaluator)
    features = sample_features(cfg, storage, f"{rel}/samples", manifest, evaluator)
    space = "pool" if evaluator.kind == INCEPTION else "proxy"
    generated = FeatureStats.from_features(features[space])
    metrics = {
        "fd_intermediate": frechet_distance(reference.stats[space], generated),
        "generator_step": step,
    }
    storage.write_json(metrics, rel, "metrics.json")
    return metrics


def first_samples(
    storage: Storage, rel: str, manifest, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` samples (for the grid), without loading the whole sample set."""
    images, labels = [], []
    for name in manifest.chunks:
        with np.load(io.BytesIO(storage.read_bytes(rel, "samples", "chunks", name))) as chunk:
            images.append(chunk["images"])
            labels.append(chunk["labels"])
        if sum(len(x) for x in images) >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]
