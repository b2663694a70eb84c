"""Distributed, reproducible, resumable sample generation for generator evaluation.

    <out_rel>/
      plan.json                    what these samples are (written first; a rerun must match it)
      chunks/chunk_00000000.npz    images uint8 (B, H, W, 3), labels int64, indices int64
      chunks/chunk_00000064.npz    ...
      manifest.json                written last: the run is complete when it exists

The index range [0, N) is cut into fixed chunks of `evaluation.batch_size` samples, and each
chunk is generated as one batch (`workloads.generation.generate_chunk`). Noise and labels are
keyed by the sample index and the batch composition does not depend on the worker count, so the
samples are bit-identical for any number of workers (same device kind and thread count). A chunk
is the unit of atomic write and of resume: a rerun generates only the chunks that are missing.

Given an evaluator, the same actors also score every chunk (the ones they generate, and the
ones an earlier run left) with the evaluator network: generation and feature extraction are one
pass over the samples, in one pool, instead of a second pool that would start, load its network
and read every chunk back.

Ray Data `map_batches` over chunk descriptors on an `ActorPoolStrategy` pool is used rather than
a `ray.util.ActorPool`, as in the latent cache: each actor loads its networks once, Ray Data
restarts failed actors and retries their chunks, and the pool only reserves what the cluster
has (one GPU per actor, or CPU actors).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import ray
import torch
from PIL import Image

from orchestrator.config import ExperimentConfig, resolve
from orchestrator.evaluation.evaluators import EvaluatorSpec
from orchestrator.evaluation.pools import gather_columns
from orchestrator.storage.models import generator_kwargs, read_weights, tokenizer_spec
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget, resources
from workloads.dit import LatentStats, LightningDiT_models, load_lightningdit_checkpoint
from workloads.families import TokenizerSpec
from workloads.generation import RNG_SCHEME, class_labels, generate_chunk
from workloads.samplers import SamplerSpec

log = logging.getLogger("ldm_frontier.generate")

PLAN = "plan.json"
MANIFEST = "manifest.json"
CHUNKS = "chunks"


def chunk_name(start: int) -> str:
    """File name of the chunk whose first sample index is `start`."""
    return f"chunk_{start:08d}.npz"


# --------------------------------------------------------------------------------------------
# What a run is
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleManifest:
    """A finished sample set: its identity (`plan`), chunk files and counts."""

    plan: dict
    chunks: list[str]
    class_counts: list[int]
    # Chunks computed by the run that finished the set, and chunks an earlier run had written.
    chunks_generated: int
    chunks_reused: int

    @property
    def num_samples(self) -> int:
        return self.plan["num_samples"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SampleManifest:
        return cls(**data)


@dataclass(frozen=True)
class ScoredSamples:
    """A finished sample set and, when an evaluator was given, its features in index order."""

    manifest: SampleManifest
    # Evaluator columns (`pool`/`logits`/`spatial` or `proxy`/`pred`) and `label`, one row per
    # sample, sorted by sample index; None without an evaluator.
    features: dict[str, np.ndarray] | None


def _plan(
    cfg: ExperimentConfig,
    num_samples: int,
    latent_stats: dict,
    generator_sha256: str,
    tokenizer_sha256: str,
) -> dict:
    evaluation = cfg.evaluation
    model = cfg.generator.model
    return {
        "num_samples": num_samples,
        "num_classes": cfg.dataset.num_classes,
        "chunk_size": evaluation.batch_size,
        "seed": evaluation.seed,
        "label_policy": evaluation.label_policy,
        "rng_scheme": RNG_SCHEME,
        "sampler": cfg.sampler.to_dict(),
        "latent_shape": [model.in_channels, model.input_size, model.input_size],
        # Through LatentStats: validated here rather than in every actor.
        "latent_stats": LatentStats.from_dict(latent_stats).to_dict(),
        "generator": {
            "model": model.name,
            "kwargs": generator_kwargs(cfg),
            "sha256": generator_sha256,
        },
        "tokenizer": {**dataclasses.asdict(tokenizer_spec(cfg)), "sha256": tokenizer_sha256},
    }


def _check_same_plan(storage: Storage, out_rel: str, plan: dict) -> None:
    """Write the plan of a new run; refuse to mix samples of a different one into `out_rel`."""
    if not storage.exists(out_rel, PLAN):
        storage.write_json(plan, out_rel, PLAN)
        return
    existing, wanted = storage.read_json(out_rel, PLAN), _json_round_trip(plan)
    differing = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
    if differing:
        raise ValueError(
            f"{storage.uri_for(out_rel)} holds samples of another run (differs in {differing}); "
            "use another output directory or delete this one"
        )


def _json_round_trip(obj: dict) -> dict:
    """`obj` as it reads back from storage (tuples become lists), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def generate_samples(
    cfg: ExperimentConfig,
    storage: Storage,
    out_rel: str,
    *,
    generator_weights: str,
    tokenizer_weights: str,
    latent_stats: dict,
    num_samples: int | None = None,
    num_workers: int | None = None,
    evaluator: EvaluatorSpec | None = None,
) -> ScoredSamples:
    """Generate (or finish generating) `num_samples` samples into `out_rel`; idempotent. With
    an `evaluator`, also the evaluator's features of every sample (same pass, same actors).

    `generator_weights` is the exported EMA LightningDiT state dict and `tokenizer_weights` the
    exported tokenizer inference state dict (safetensors, local path or URI);
    `latent_stats` is `LatentStats.to_dict()` of the generator's training latents. Defaults:
    `evaluation.num_samples` samples on `evaluation.num_workers` actors (null: the trial's
    whole share, `resources.pool`).
    """
    cfg = resolve(cfg)
    count = cfg.evaluation.num_samples if num_samples is None else num_samples
    if count < 1:
        raise ValueError(f"num_samples must be positive, got {count}")
    generator_tensors, generator_sha = read_weights(generator_weights)
    tokenizer_tensors, tokenizer_sha = read_weights(tokenizer_weights)
    plan = _plan(cfg, count, latent_stats, generator_sha, tokenizer_sha)
    _check_same_plan(storage, out_rel, plan)
    finished = storage.exists(out_rel, MANIFEST)
    if finished and evaluator is None:
        return ScoredSamples(SampleManifest.from_dict(storage.read_json(out_rel, MANIFEST)), None)

    size = cfg.evaluation.batch_size
    starts = list(range(0, count, size))
    existing = set(storage.listdir(out_rel, CHUNKS))
    for leftover in sorted(name for name in existing if ".tmp-" in name):
        storage.delete(out_rel, CHUNKS, leftover)  # a killed writer's partial file
    chunks = [
        {"start": start, "stop": min(start + size, count), "written": chunk_name(start) in existing}
        for start in starts
    ]
    pending = sum(not c["written"] for c in chunks)
    log.info(
        "samples %s: %d in %d chunks, %d to generate%s",
        storage.uri_for(out_rel),
        count,
        len(starts),
        pending,
        ", every chunk scored" if evaluator is not None else "",
    )
    # Without scoring, only the missing chunks go to the pool; with it, every chunk does (a
    # written one is read back and scored, its networks never loaded for it).
    todo = chunks if evaluator is not None else [c for c in chunks if not c["written"]]
    features = None
    if todo:
        weights = {"generator": generator_tensors, "tokenizer": tokenizer_tensors}
        features = _run_pool(cfg, storage, out_rel, plan, todo, weights, num_workers, evaluator)
    if finished:
        return ScoredSamples(
            SampleManifest.from_dict(storage.read_json(out_rel, MANIFEST)), features
        )
    missing = [s for s in starts if not storage.exists(out_rel, CHUNKS, chunk_name(s))]
    if missing:
        raise RuntimeError(f"chunks starting at {missing[:5]} were not written")
    labels = class_labels(range(count), cfg.dataset.num_classes, plan["label_policy"], plan["seed"])
    manifest = SampleManifest(
        plan=_json_round_trip(plan),
        chunks=[chunk_name(start) for start in starts],
        class_counts=torch.bincount(labels, minlength=cfg.dataset.num_classes).tolist(),
        chunks_generated=pending,
        chunks_reused=len(starts) - pending,
    )
    storage.write_json(manifest.to_dict(), out_rel, MANIFEST)
    return ScoredSamples(manifest, features)


def _run_pool(
    cfg: ExperimentConfig,
    storage: Storage,
    out_rel: str,
    plan: dict,
    chunks: list[dict],
    weights: dict[str, dict[str, torch.Tensor]],
    num_workers: int | None,
    evaluator: EvaluatorSpec | None,
) -> dict[str, np.ndarray] | None:
    """Generate the unwritten `chunks` (and score all of them with `evaluator`) on an actor
    pool; the features in sample-index order, or None without an evaluator."""
    # At most the trial's share of actors. The same thread count for every pool size: CPU
    # reductions may split by thread count.
    chosen = resources.pool(
        cfg,
        "samples",
        cfg.evaluation.num_workers if num_workers is None else num_workers,
        items=len(chunks),
    )
    written = chosen.map(
        resources.Items(chunks),
        ChunkGenerator,
        {
            # Weights travel through the object store, so actors need no shared filesystem.
            "generator_ref": ray.put(weights["generator"]),
            "tokenizer_ref": ray.put(weights["tokenizer"]),
            "plan": _json_round_trip(plan),
            "device": chosen.device,
            "torch_threads": chosen.threads,
            "storage_uri": storage.uri,
            "out_rel": out_rel,
            "point": resources.point_id(cfg),
            "evaluator": None if evaluator is None else dataclasses.asdict(evaluator),
        },
        batch_format="numpy",
        # One chunk per call: the chunk is the batch, the unit of atomic write and of resume.
        batch_size=1,
        # One chunk queued per actor: chunks take seconds to minutes, so a free actor takes the
        # next one instead of chunks piling up behind a busy (or still starting) actor.
        max_tasks_in_flight_per_actor=1,
    )
    started = time.monotonic()
    data = gather_columns(written, chosen.units)
    log.info("samples: %d chunks in %.1f s", len(chunks), time.monotonic() - started)
    if evaluator is None:
        return None
    # Actors finish chunks in any order; index order makes every metric that takes a prefix
    # of the samples (precision/recall's first 10K) independent of scheduling.
    order = np.argsort(data.pop("index"), kind="stable")
    return {name: values[order] for name, values in data.items()}


class ChunkGenerator:
    """Ray Data actor: generates and writes chunks (loading the DiT and the tokenizer once, at
    the first chunk it must generate) and, with an evaluator, scores every chunk it is given."""

    def __init__(
        self,
        *,
        generator_ref: ray.ObjectRef,
        tokenizer_ref: ray.ObjectRef,
        plan: dict,
        device: str,
        torch_threads: int,
        storage_uri: str,
        out_rel: str,
        point: str,
        evaluator: dict | None,
    ):
        torch.set_num_threads(torch_threads)
        resources.record_placement("sample actor", point)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # Plain fp32 (a bf16 option is future work): TF32, which cuDNN convs use by default,
            # rounds matmul inputs to 10 mantissa bits. Autotuning may pick another conv
            # algorithm on another actor, and with it other bits, so it is off too.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
        self.refs = {"generator": generator_ref, "tokenizer": tokenizer_ref}
        self.models: tuple[torch.nn.Module, torch.nn.Module] | None = None
        self.features = None if evaluator is None else EvaluatorSpec(**evaluator).build(device)
        self.storage = Storage.from_uri(storage_uri)
        self.out_rel = out_rel
        self.plan = plan
        self.stats = LatentStats.from_dict(self.plan["latent_stats"])
        self.spec = SamplerSpec.from_dict(self.plan["sampler"])
        self.compute = budget.ComputeClock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        before = self.compute.seconds
        parts = []
        for start, stop, written in zip(
            batch["start"].tolist(), batch["stop"].tolist(), batch["written"].tolist()
        ):
            if written:
                chunk = read_chunk(self.storage, self.out_rel, chunk_name(start))
                images, labels = chunk["images"], chunk["labels"]
            else:
                images, labels = self.write_chunk(start, stop)
            part = {"index": np.arange(start, stop, dtype=np.int64), "label": labels}
            if self.features is not None:
                with self.compute:
                    part.update(self.features(images))
            parts.append(part)
        out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        # Seconds inside sampling, decoding and scoring (reading and writing are I/O).
        out["compute_s"] = budget.per_row(self.compute.seconds - before, len(out["index"]))
        return out

    def networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The DiT and the tokenizer, loaded at the first chunk this actor generates."""
        if self.models is None:
            generator = self.plan["generator"]
            dit = LightningDiT_models[generator["model"]](**generator["kwargs"])
            load_lightningdit_checkpoint(dit, ray.get(self.refs["generator"]))
            spec = TokenizerSpec(self.plan["tokenizer"]["family"], self.plan["tokenizer"]["kwargs"])
            tokenizer = spec.build(ray.get(self.refs["tokenizer"]))
            self.models = (dit.eval().to(self.device), tokenizer.to(self.device))
        return self.models

    def write_chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        indices = list(range(start, stop))
        dit, tokenizer = self.networks()
        with self.compute:
            images, labels = generate_chunk(
                dit,
                tokenizer,
                self.stats,
                indices,
                self.spec,
                seed=self.plan["seed"],
                num_classes=self.plan["num_classes"],
                label_policy=self.plan["label_policy"],
                latent_shape=self.plan["latent_shape"],
            )
        images, labels = images.numpy(), labels.numpy()
        buffer = io.BytesIO()
        # Uncompressed: decoded samples barely compress and 50K of them are read back whole.
        np.savez(buffer, images=images, labels=labels, indices=np.asarray(indices, dtype=np.int64))
        self.storage.write_bytes(buffer.getvalue(), self.out_rel, CHUNKS, chunk_name(start))
        return images, labels


# --------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------
def read_chunk(storage: Storage, out_rel: str, name: str) -> dict[str, np.ndarray]:
    """One stored chunk: `images` uint8 (B, H, W, 3), `labels` and `indices` int64 (B,)."""
    with np.load(io.BytesIO(storage.read_bytes(out_rel, CHUNKS, name))) as chunk:
        return {key: chunk[key] for key in chunk.files}


def load_samples(storage: Storage, out_rel: str) -> tuple[np.ndarray, np.ndarray]:
    """All samples of a finished run in index order: (uint8 (N, H, W, 3), int64 labels (N,))."""
    if not storage.exists(out_rel, MANIFEST):
        raise FileNotFoundError(f"no finished sample set at {storage.uri_for(out_rel)}")
    manifest = SampleManifest.from_dict(storage.read_json(out_rel, MANIFEST))
    images, labels, expected_start = [], [], 0
    for name in manifest.chunks:
        chunk = read_chunk(storage, out_rel, name)
        indices = chunk["indices"]
        if indices.tolist() != list(range(expected_start, expected_start + len(indices))):
            raise ValueError(f"{name} does not continue the index range at {expected_start}")
        images.append(chunk["images"])
        labels.append(chunk["labels"])
        expected_start += len(indices)
    if expected_start != manifest.num_samples:
        raise ValueError(
            f"chunks hold {expected_start} samples, manifest says {manifest.num_samples}"
        )
    return np.concatenate(images), np.concatenate(labels)


def sample_grid(images: np.ndarray, labels: np.ndarray, nrow: int, padding: int = 2) -> Image.Image:
    """A PNG-ready grid of uint8 NHWC `images`, `nrow` per row, grouped by class label.

    Images are ordered by label (stable, so index order within a class), so the grid reads
    class by class; the gaps are black.
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    if len(images) == 0 or nrow < 1:
        raise ValueError("need at least one image and nrow >= 1")
    ordered = images[np.argsort(labels, kind="stable")]
    count, height, width, channels = ordered.shape
    rows = -(-count // nrow)
    grid = np.zeros(
        (rows * (height + padding) + padding, nrow * (width + padding) + padding, channels),
        dtype=np.uint8,
    )
    for k, image in enumerate(ordered):
        top = padding + (k // nrow) * (height + padding)
        left = padding + (k % nrow) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return Image.fromarray(grid.squeeze(-1) if channels == 1 else grid)
