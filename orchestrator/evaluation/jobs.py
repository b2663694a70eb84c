"""Evaluation jobs on Ray: reconstruction metrics of a tokenizer, generation metrics of a DiT.

Both run as Ray Data actor pools (GPU actors where the cluster has GPUs, CPU actors otherwise);
the driver only aggregates per-image values and features. Every metric is written with the
spec that produced it (`metrics.json`, `eval_spec.json`) and labelled honestly: `gfid` is a real
FID only with Inception weights, and its label says how many samples (FID-10K, FID-50K, ...).
"""

from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from orchestrator.config import ExperimentConfig, stage_keys
from orchestrator.evaluation.evaluators import INCEPTION, EvaluatorSpec
from orchestrator.evaluation.generate import generate_samples, read_chunk
from orchestrator.evaluation.naming import fd_dinov2_enabled, reports_lpips
from orchestrator.evaluation.pools import actor_pool, gather_columns
from orchestrator.storage.artifacts import EMA_WEIGHTS, Artifacts
from orchestrator.storage.models import read_weights, tokenizer_spec
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget, resources

# Bump when what a stored reference holds changes (v2: a seeded random precision/recall subset
# across classes instead of the first rows of the class-ordered index).
REFERENCE_FORMAT = "v2"
GRID_IMAGES = 8
GRID_SAMPLES = 64


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
        from workloads.vavae import LPIPS

        torch.set_num_threads(plan["threads"])
        resources.record_placement("tokenizer eval actor", plan["point"])
        self.device = torch.device(plan["device"])
        self.tokenizer = plan["tokenizer"].build(ray.get(plan["weights"])).to(self.device)
        self.features = EvaluatorSpec(**plan["evaluator"]).build(self.device)
        self.lpips = None
        if plan["lpips"]:
            weights, backbone = plan["lpips"]
            self.lpips = LPIPS(weights, backbone_weights=backbone).to(self.device)
        self.dinov2 = None
        if plan["fd_dinov2"]:
            from workloads.metrics.fd_dinov2 import DINOv2Features

            self.dinov2 = DINOv2Features(plan["fd_dinov2"]).to(self.device)
        self.seed = plan["seed"]
        # Seconds computed before the first batch (the bank), reported with that batch.
        self.carried = 0.0
        # iFID's training-latent bank (posterior means, sorted by image id), or None.
        self.bank = None if plan["bank"] is None else self.encode_bank(plan)

    @torch.no_grad()
    def encode_bank(self, plan: dict) -> np.ndarray:
        """Posterior means of the bank's training images, in the driver's order (image id).

        Encoded here, by every actor of the pool, rather than by a pool of its own before this
        one: on a small run a second pool (processes, imports, weights) costs far more than the
        bank, and on a GPU cluster K actors encode K banks (10K images each by default, seconds
        per GPU) instead of waiting for another pool to start."""
        from concurrent.futures import ThreadPoolExecutor

        from orchestrator.data.images import load_image

        locators = ray.get(plan["bank"])
        pairs = list(zip(locators["path"], locators["row"]))
        size = plan["batch_size"]

        def decode(pair: tuple[str, int]) -> np.ndarray:
            path, row = pair
            # The reference evaluates its tokenizer on Resize + CenterCrop, as the scored images.
            return load_image(path, row=row, view="resize_center", **plan["image"])

        means = []
        # Pillow releases the GIL: decoding on the actor's threads.
        with ThreadPoolExecutor(max_workers=plan["threads"]) as pool:
            for start in range(0, len(pairs), size):
                images = np.stack(list(pool.map(decode, pairs[start : start + size])))
                began = time.perf_counter()  # compute: the encoder, not the decoding
                x = torch.from_numpy(images).to(self.device)
                means.append(self.tokenizer.encode(x).mean.float().cpu().numpy())
                self.carried += time.perf_counter() - began
        return np.concatenate(means)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from workloads.metrics.latent_proxies import spatial_self_similarity
        from workloads.metrics.reconstruction import lpips_distance, psnr, ssim

        began = time.perf_counter() - self.carried
        self.carried = 0.0
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
        if self.dinov2 is not None:
            out["fd_orig"] = self.dinov2(x).cpu().numpy()
            out["fd_rec"] = self.dinov2(rec.clamp(-1, 1)).cpu().numpy()
        mean = posterior.mean.float().cpu().numpy()
        # Latent-space proxies (workloads/metrics/latent_proxies.py): LDS per image; LNC needs
        # every latent with its label at the driver.
        out["lds"] = np.array([spatial_self_similarity(m[None]) for m in mean])
        out["latent"] = mean.reshape(len(mean), -1)
        out["label"] = np.asarray(batch["label"])
        if self.bank is not None:
            out["feat_interp"] = self.interpolations(mean, rngs)[key].astype(np.float32)
        out["compute_s"] = budget.per_row(time.perf_counter() - began, len(x))
        return out

    def interpolations(self, mean: np.ndarray, rngs: list[np.random.Generator]) -> dict:
        """iFID: SLERP each latent with a training neighbour drawn by softmax(-MSE), decode,
        and return the evaluator's features of the decoded interpolations."""
        from workloads.metrics.latent_proxies import interpolation_partners, slerp

        # Drawn after the posterior noise and pixel position: the same per-image stream.
        uniforms = np.array([r.random() for r in rngs])
        partners = interpolation_partners(mean, self.bank, uniforms)
        mixed = slerp(mean, self.bank[partners]).astype(np.float32)
        decoded = self.tokenizer.decode(torch.from_numpy(mixed).to(self.device))
        return self.features(to_uint8_nhwc(decoded.float().cpu()))


def bank_locators(cfg: ExperimentConfig, ingested) -> dict[str, list]:
    """Where iFID's latent bank images are: `evaluation.proxy_train_images` training images (all
    when the split is smaller), a seeded sample across classes, ordered by image id, so the
    bank's order never depends on Ray's scheduling."""
    from orchestrator.data.parquet_io import read_table
    from workloads.metrics.precision_recall import reference_rows

    ev = cfg.evaluation
    index = read_table(
        ingested.index_paths[cfg.dataset.train_split], columns=["path", "row", "image_id"]
    )
    # All of a split smaller than the sample asked for (the spec records the bank's size).
    picked = index.take(
        np.sort(reference_rows(len(index), min(len(index), ev.proxy_train_images), ev.seed))
    )
    order = np.argsort(np.asarray(picked["image_id"].to_pylist(), dtype=object), kind="stable")
    picked = picked.take(order)
    return {"path": picked["path"].to_pylist(), "row": picked["row"].to_pylist()}


def latent_pixels(mean: torch.Tensor, rngs: list[np.random.Generator]) -> np.ndarray:
    _, _, height, width = mean.shape
    rows = [int(r.integers(height)) for r in rngs]
    cols = [int(r.integers(width)) for r in rngs]
    return mean[torch.arange(len(rngs)), :, rows, cols].numpy()


def evaluate_tokenizer(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    tokenizer_weights: str,
    evaluator: EvaluatorSpec,
) -> dict:
    """Reconstruction metrics on the first `tokenizer_num_images` validation images (cached)."""
    from orchestrator.data import indexed_images
    from workloads.metrics.frechet import fid_from_features
    from workloads.metrics.latent_proxies import LNC_MAX_LATENTS
    from workloads.metrics.names import metric_name
    from workloads.metrics.uniformity import latent_uniformity

    artifacts = Artifacts(storage)
    rel = Artifacts.tokenizer_eval(stage_keys(cfg).tokenizer_eval)
    if artifacts.is_done(rel):
        return artifacts.read_done(rel)
    ev = cfg.evaluation
    tensors, sha = read_weights(tokenizer_weights)
    actor, chosen = actor_pool(cfg)
    plan = {
        **actor,
        "tokenizer": tokenizer_spec(cfg),
        "weights": ray.put(tensors),
        "evaluator": evaluator.__dict__,
        "lpips": lpips_metric_weights(cfg),
        "fd_dinov2": fd_dinov2_weights(cfg),
        "seed": ev.seed,
        "batch_size": ev.batch_size,
        "image": {
            "resolution": cfg.dataset.resolution,
            "max_pixels": cfg.dataset.max_image_pixels,
        },
    }
    bank = bank_locators(cfg, ingested) if ev.proxy_train_images else None
    plan["bank"] = None if bank is None else ray.put(bank)
    # The reference evaluates its tokenizer on Resize(256) + CenterCrop(256), not the ADM crop.
    images = indexed_images(
        ingested, cfg, cfg.dataset.val_split, limit=ev.tokenizer_num_images, view="resize_center"
    )
    scored = chosen.map(
        images,
        ReconstructionScorer,
        {"plan": plan},
        batch_size=ev.batch_size,
        batch_format="numpy",
    )
    # LNC compares at most LNC_MAX_LATENTS latents (memory: N^2).
    data = gather_columns(scored, chosen.units, caps={"latent": LNC_MAX_LATENTS})
    count = len(data["psnr"])
    if count < ev.tokenizer_num_images:
        # Metric names carry the count the config asks for (`rfid_50k`); never report fewer.
        raise ValueError(
            f"evaluation.tokenizer_num_images asks for {ev.tokenizer_num_images:,} images but "
            f"split `{cfg.dataset.val_split}` holds {count:,}; lower it to at most {count:,}"
        )
    # The metrics from the gathered columns (Frechet distances, t-SNE uniformity, LNC) are
    # evaluation compute too, done here rather than in the actors: counted as one core.
    with budget.computing_here(units=1):
        recon_name = metric_name("rfid" if evaluator.kind == INCEPTION else "rfd_proxy", count)
        metrics = {
            "psnr": float(np.mean(data["psnr"])),
            "ssim": float(np.mean(data["ssim"])),
            recon_name: fid_from_features(data["feat_orig"], data["feat_rec"]),
        }
        if plan["lpips"]:
            metrics["lpips"] = float(np.mean(data["lpips"]))
        if "fd_orig" in data:
            metrics[metric_name("rfd_dinov2", count)] = fid_from_features(
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
        metrics.update(latent_proxy_metrics(data, evaluator, count))
    summary = {
        "metrics": metrics,
        "labels": counted_labels(metrics),
        "spec": {
            "images": count,
            "proxies": {
                "ifid_train_images": 0 if bank is None else len(bank["path"]),
                "ifid": "SLERP(0.5) with a softmax(-MSE) draw among the 10 cosine-nearest "
                "training latents, decoded; FD against the validation images (arXiv 2603.05630)",
                "lnc": f"same-label fraction of the 10 cosine-nearest validation latents, over "
                f"the first {min(count, LNC_MAX_LATENTS)} (arXiv 2606.03578)",
                "lds": "4-neighbour minus far (Manhattan >= 6) cosine of latent pixels "
                "(iREPA, arXiv 2512.10794)",
            },
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


def latent_proxy_metrics(data: dict, evaluator: EvaluatorSpec, count: int) -> dict[str, float]:
    """The gFID proxies from the scored columns, named with their counts (the config-side twin,
    `naming.latent_proxies`, says which a config reports)."""
    from workloads.metrics.frechet import fid_from_features
    from workloads.metrics.latent_proxies import (
        LNC_MAX_LATENTS,
        LNC_NEIGHBOURS,
        neighbour_label_agreement,
    )
    from workloads.metrics.names import metric_name

    metrics = {"lds": float(np.mean(data["lds"]))}
    if "feat_interp" in data:
        name = "ifid" if evaluator.kind == INCEPTION else "ifd_proxy"
        metrics[metric_name(name, count)] = fid_from_features(
            data["feat_orig"], data["feat_interp"]
        )
    latents = data["latent"][:LNC_MAX_LATENTS]
    if len(latents) > LNC_NEIGHBOURS:
        labels = data["label"][: len(latents)]
        metrics[metric_name("lnc", len(latents))] = neighbour_label_agreement(latents, labels)
    return metrics


def fd_dinov2_weights(cfg: ExperimentConfig) -> str | None:
    """A local path (or `hub`) for the FD_DINOv2 network, or None when it is not reported."""
    if not fd_dinov2_enabled(cfg):
        return None
    weights = cfg.evaluation.fd_dinov2_weights
    return weights if weights == "hub" else str(Path(weights).expanduser())


def counted_labels(metrics: dict[str, float]) -> dict[str, str]:
    """`fid_10k` -> `FID-10K` for every metric named with a sample count (MLflow tags)."""
    from workloads.metrics.names import display_label, parse_metric

    return {name: display_label(name) for name in metrics if parse_metric(name)[1] is not None}


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

    index = read_table(ingested.index_paths[cfg.dataset.val_split], columns=["path", "row"]).slice(
        0, GRID_IMAGES
    )
    images = load_images(
        index.column("path").to_pylist(),
        rows=index.column("row").to_pylist(),
        resolution=cfg.dataset.resolution,
        max_pixels=cfg.dataset.max_image_pixels,
        view="resize_center",
    )
    model = tokenizer_spec(cfg).build(tensors)
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
    """Ray Data actor: evaluator features of images (float CHW in [-1, 1]) or of stored image
    chunks (an ADM reference batch)."""

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
        began = time.perf_counter()
        features = self.features(images)
        compute = budget.per_row(time.perf_counter() - began, len(labels))
        return {**features, "label": labels, "compute_s": compute}


def collect_features(
    source: resources.PoolInput,
    cfg: ExperimentConfig,
    evaluator: EvaluatorSpec,
    storage: Storage,
    batch_size: int,
) -> dict[str, np.ndarray]:
    actor, chosen = actor_pool(cfg)
    plan = {
        **actor,
        "evaluator": evaluator.__dict__,
        "storage": storage.uri,
    }
    scored = chosen.map(
        source, FeatureScorer, {"plan": plan}, batch_size=batch_size, batch_format="numpy"
    )
    return gather_columns(scored, chosen.units)


@dataclass(frozen=True)
class Reference:
    stats: dict
    # Evaluator features of a seeded random reference subset (precision/recall), random order.
    pr_features: np.ndarray
    identity: str


def _write_stats(storage: Storage, rel: str, identity: str, stats: dict, pr: np.ndarray) -> None:
    arrays = {"identity": np.array(identity), "pr_features": pr}
    for n, s in stats.items():
        arrays[f"mu_{n}"], arrays[f"sigma_{n}"] = s.mu, s.sigma
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(buffer.getvalue(), rel, "stats.npz")


def _read_stats(storage: Storage, rel: str, identity: str) -> Reference | None:
    from workloads.metrics.frechet import FeatureStats

    if not storage.exists(rel, "stats.npz"):
        return None
    cached = np.load(io.BytesIO(storage.read_bytes(rel, "stats.npz")))
    if str(cached["identity"]) != identity:
        raise ValueError(f"{storage.uri_for(rel)} holds statistics for {cached['identity']}")
    names = [k.removeprefix("mu_") for k in cached.files if k.startswith("mu_")]
    stats = {n: FeatureStats(cached[f"mu_{n}"], cached[f"sigma_{n}"]) for n in names}
    return Reference(stats, cached["pr_features"], identity)


def reference_statistics(
    cfg: ExperimentConfig, storage: Storage, ingested, evaluator: EvaluatorSpec
) -> Reference:
    """The reference in the evaluator's space, cached by data + evaluator (ADM's protocol).

    With `evaluation.reference_stats` (an ADM reference batch such as
    `VIRTUAL_imagenet256_labeled.npz`) its mu/sigma and mu_s/sigma_s are used as stored, and
    precision/recall compare against its `arr_0` images, as ADM's evaluator does. Otherwise the
    statistics are those of the whole `reference_split`, and precision/recall compare against a
    seeded random 10K subset of it, spanning every class.
    """
    if cfg.evaluation.reference_stats:
        return adm_reference(cfg, storage, evaluator)
    from orchestrator.data import indexed_images
    from workloads.metrics.frechet import FeatureStats
    from workloads.metrics.names import PR_IMAGES
    from workloads.metrics.precision_recall import reference_rows

    split, seed = cfg.evaluation.reference_split, cfg.evaluation.seed
    identity = (
        f"{ingested.dataset_identity}/{split}|{evaluator.key}|pr-seed={seed}|{REFERENCE_FORMAT}"
    )
    rel = f"models/reference/{zlib.crc32(identity.encode()):08x}"
    cached = _read_stats(storage, rel, identity)
    if cached is not None:
        return cached
    features = collect_features(
        indexed_images(ingested, cfg, split), cfg, evaluator, storage, cfg.evaluation.batch_size
    )
    names = ["pool", "spatial"] if evaluator.kind == INCEPTION else ["proxy"]
    stats = {n: FeatureStats.from_features(features[n]) for n in names}
    pool = features["pool" if evaluator.kind == INCEPTION else "proxy"]
    rows = reference_rows(len(pool), min(len(pool), PR_IMAGES), seed)
    pr = pool[rows].astype(np.float32)
    _write_stats(storage, rel, identity, stats, pr)
    return Reference(stats, pr, identity)


def adm_reference(cfg: ExperimentConfig, storage: Storage, evaluator: EvaluatorSpec) -> Reference:
    """An ADM reference batch: its statistics as stored, evaluator features of its images."""
    from workloads.metrics.inception import sha256_file
    from workloads.metrics.names import PR_IMAGES, precision_recall_count
    from workloads.metrics.reference import load_reference_batch

    path = Path(cfg.evaluation.reference_stats).expanduser()
    identity = f"adm:{path.name}#sha256:{sha256_file(path)[:16]}|{evaluator.key}|{REFERENCE_FORMAT}"
    rel = f"models/reference/{zlib.crc32(identity.encode()):08x}"
    cached = _read_stats(storage, rel, identity)
    if cached is not None:
        return cached
    # ADM compares against all of arr_0 (10K images); the check asks for the P this run needs.
    needed = precision_recall_count(cfg.evaluation.num_samples)
    batch = load_reference_batch(path, needed, max_images=PR_IMAGES)
    images = batch.images
    # The evaluator actors read images from storage, as they read sample chunks.
    chunk_rows = 500
    chunks = []
    for index, start in enumerate(range(0, len(images), chunk_rows)):
        part = images[start : start + chunk_rows]
        buffer = io.BytesIO()
        np.savez(buffer, images=part, labels=np.zeros(len(part), np.int64))
        storage.write_bytes(buffer.getvalue(), rel, "chunks", f"{index:05d}.npz")
        chunks.append({"chunk": f"{rel}/chunks/{index:05d}.npz"})
    features = collect_features(resources.Items(chunks), cfg, evaluator, storage, batch_size=1)
    pr = features["pool"].astype(np.float32)
    _write_stats(storage, rel, identity, batch.stats, pr)
    return Reference(batch.stats, pr, identity)


def eval_spec(
    cfg: ExperimentConfig, count: int, reference: Reference, evaluator: EvaluatorSpec, manifest
) -> dict:
    from workloads.metrics.eval_spec import EvalSpec, EvaluatorIdentity

    spec = EvalSpec(
        sampler=cfg.sampler.to_dict(),
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
    """Generate `evaluation.num_samples` samples (distributed, resumable) and score them in the
    same pass."""
    from orchestrator.evaluation.generate import sample_grid
    from workloads.metrics.frechet import FeatureStats, frechet_distance
    from workloads.metrics.names import metric_name
    from workloads.metrics.precision_recall import precision_recall
    from workloads.metrics.suite import inception_generation_metrics

    artifacts = Artifacts(storage)
    rel = Artifacts.generator_eval(stage_keys(cfg).generator_eval)
    if artifacts.is_done(rel):
        return artifacts.read_done(rel)
    samples = generate_samples(
        cfg,
        storage,
        f"{rel}/samples",
        generator_weights=generator_weights,
        tokenizer_weights=tokenizer_weights,
        latent_stats=latent_stats,
        evaluator=evaluator,
    )
    manifest, features = samples.manifest, samples.features
    reference = reference_statistics(cfg, storage, ingested, evaluator)
    count = len(features["label"])
    # Frechet distances and precision/recall over the features: evaluation compute, here
    # (counted as one core).
    with budget.computing_here(units=1):
        if evaluator.kind == INCEPTION:
            check_pr_reference(cfg, reference, count)
            metrics = inception_generation_metrics(features, reference.stats, reference.pr_features)
        else:
            generated = features["proxy"]
            pr_count = check_pr_reference(cfg, reference, count)
            precision, recall = precision_recall(
                reference.pr_features[:pr_count], generated[:pr_count].astype(np.float32)
            )
            metrics = {
                metric_name("fd_proxy", count): frechet_distance(
                    reference.stats["proxy"], FeatureStats.from_features(generated)
                ),
                metric_name("class_consistency", count): float(
                    np.mean(features["pred"] == features["label"])
                ),
                metric_name("precision_proxy", pr_count): precision,
                metric_name("recall_proxy", pr_count): recall,
            }
    labels = counted_labels(metrics)
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


def check_pr_reference(cfg: ExperimentConfig, reference: Reference, count: int) -> int:
    """The precision/recall sample count P = min(N, 10K); the reference must hold P images."""
    from workloads.metrics.names import precision_recall_count

    pr_count = precision_recall_count(count)
    if len(reference.pr_features) < pr_count:
        ev = cfg.evaluation
        source = ev.reference_stats or f"evaluation.reference_split `{ev.reference_split}`"
        raise ValueError(
            f"{source} holds {len(reference.pr_features):,} reference images, fewer than the "
            f"{pr_count:,} precision/recall compares with {count:,} samples"
        )
    return pr_count


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
    features = generate_samples(
        cfg,
        storage,
        f"{rel}/samples",
        generator_weights=storage.uri_for(rel, EMA_WEIGHTS),
        tokenizer_weights=tokenizer_weights,
        latent_stats=latent_stats,
        num_samples=cfg.evaluation.intermediate_samples,
        evaluator=evaluator,
    ).features
    reference = reference_statistics(cfg, storage, ingested, evaluator)
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
        chunk = read_chunk(storage, f"{rel}/samples", name)
        images.append(chunk["images"])
        labels.append(chunk["labels"])
        if sum(len(x) for x in images) >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]
