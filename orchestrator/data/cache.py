"""Building the latent cache: every training image and its flip -> posterior moments in shards.

    caches/<cache-key>/
      shard-00000.parquet ...   moments + label + image id (see `shards.py` for the layout)
      build.json                the tokenizer the shards belong to (guards resume)
      manifest.json             identities, shapes, dtype, statistics (see `manifest.py`)
      DONE.json                 written last

Reuse and resume: a finished cache (DONE) is returned as is. Otherwise the shard plan is
recomputed (it is deterministic), shards already on storage are kept untouched, leftovers of a
killed build are deleted, and only the missing shards go through Ray Data: `from_items` of
shard descriptors -> `map_batches(RayShardEncoder)` on an actor pool (one tokenizer per actor,
one GPU each where there are GPUs). The manifest's statistics are merged from the per-shard
statistics every shard carries, so finishing a resumed build reads no latent twice.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import ray

from orchestrator.config import ExperimentConfig, latent_grid, stage_keys
from orchestrator.data.encoder import RayShardEncoder
from orchestrator.data.ingest import IngestResult
from orchestrator.data.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    CacheManifest,
    check_tokenizer,
    file_sha256,
    load_manifest,
)
from orchestrator.data.parquet_io import read_table
from orchestrator.data.shards import (
    STORAGE_DTYPES,
    ChannelMoments,
    ShardPlan,
    moment_columns,
    plan_shards,
    read_shard_moments,
    remove_temporaries,
    shard_file_name,
)
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.models import read_weights, tokenizer_spec
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget, resources
from workloads.families import get_family

log = logging.getLogger("ldm_frontier.data")

# Written when a build starts: which tokenizer the shards on storage belong to.
BUILD_CLAIM = "build.json"


def build_latent_cache(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested: IngestResult,
    tokenizer_weights: str,
    tokenizer_identity: str,
) -> CacheManifest:
    """Encode the training split with the exported tokenizer (idempotent and resumable); with
    `cache.mode: on_the_fly`, only the images the latent statistics are computed over (the
    generator's workers encode the rest as they train).

    `tokenizer_weights` is the tokenizer's exported `.safetensors` (see `tokenizer_spec`);
    `tokenizer_identity` is recorded and checked by every reader (see
    `manifest.tokenizer_identity`). Callers in a sweep hold the stage lock of the cache key.
    """
    cache_rel = Artifacts.cache(stage_keys(cfg).cache)
    artifacts = Artifacts(storage)
    if artifacts.is_done(cache_rel):
        manifest = load_manifest(storage.uri_for(cache_rel))
        check_tokenizer(manifest, tokenizer_identity)
        return manifest
    split = cfg.dataset.train_split
    index = read_table(ingested.index_paths[split], columns=["path", "row", "label", "image_id"])
    plans = plan_shards(
        len(index), cfg.cache.rows_per_shard, seed=cfg.seed, stats_samples=cfg.cache.stats_samples
    )
    if cfg.cache.mode == "on_the_fly":
        plans = statistics_only(plans)
    _claim_for_tokenizer(storage, cache_rel, tokenizer_identity)
    removed = remove_temporaries(storage, cache_rel)
    existing = set(storage.listdir(cache_rel))
    pending = [plan for plan in plans if shard_file_name(plan.shard_id) not in existing]
    log.info(
        "latent cache %s: %d images, %d shards, %d to encode (%d partial files removed)",
        storage.uri_for(cache_rel),
        len(index),
        len(plans),
        len(pending),
        removed,
    )
    if pending:
        _encode_shards(cfg, storage, cache_rel, index, pending, tokenizer_weights)
    manifest = _manifest(
        cfg, storage, cache_rel, ingested, plans, tokenizer_weights, tokenizer_identity
    )
    storage.write_json(manifest.to_dict(), cache_rel, MANIFEST)
    artifacts.mark_done(cache_rel, {"count": manifest.count, "shards": len(manifest.shards)})
    return manifest


def statistics_only(plans: list[ShardPlan]) -> list[ShardPlan]:
    """The shards cut down to the rows the statistics are computed over (same ids, same rows
    within each, so the statistics equal a full cache's); shards left empty are dropped."""
    return [
        ShardPlan(plan.shard_id, plan.rows[plan.stats_mask], plan.stats_mask[plan.stats_mask])
        for plan in plans
        if plan.stats_mask.any()
    ]


def _claim_for_tokenizer(storage: Storage, cache_rel: str, tokenizer_identity: str) -> None:
    """Record which tokenizer this (unfinished) cache is being built with.

    A crashed build is resumed only by the same tokenizer: the cache key hashes the tokenizer's
    config, and a retrained tokenizer with the same config has other weights, so its latents
    must not be mixed with shards left by the old one.
    """
    if storage.exists(cache_rel, BUILD_CLAIM):
        claimed = storage.read_json(cache_rel, BUILD_CLAIM)["tokenizer_identity"]
        if claimed == tokenizer_identity:
            return
        stale = [name for name in storage.listdir(cache_rel) if name.startswith("shard-")]
        log.warning(
            "latent cache %s: %d shards were encoded by tokenizer %s, not %s; re-encoding all",
            storage.uri_for(cache_rel),
            len(stale),
            claimed,
            tokenizer_identity,
        )
        for name in stale:
            storage.delete(cache_rel, name)
    storage.write_json({"tokenizer_identity": tokenizer_identity}, cache_rel, BUILD_CLAIM)


# --------------------------------------------------------------------------------------------
# The Ray Data pass
# --------------------------------------------------------------------------------------------
def shard_descriptors(index: pa.Table, plans: list[ShardPlan]) -> list[dict]:
    """What an encoder needs per shard: its rows' ingest positions, paths, labels, ids."""
    paths, locations, labels, image_ids = (
        index[name].to_pylist() for name in ("path", "row", "label", "image_id")
    )
    descriptors = []
    for plan in plans:
        rows = plan.rows.tolist()
        descriptors.append(
            {
                "shard": plan.shard_id,
                "index": rows,
                "path": [paths[i] for i in rows],
                "row": [locations[i] for i in rows],
                "label": [labels[i] for i in rows],
                "image_id": [image_ids[i] for i in rows],
                "stats": plan.stats_mask.tolist(),
            }
        )
    return descriptors


def shard_encoder_kwargs(
    cfg: ExperimentConfig, storage: Storage, cache_rel: str, *, device: str, threads: int
) -> dict:
    """`ShardEncoder` arguments (all but the weights) for the cache of `cfg` at `cache_rel`."""
    return {
        "tokenizer": tokenizer_spec(cfg),
        "device": device,
        "torch_threads": threads,
        "decode_threads": threads,
        "resolution": cfg.dataset.resolution,
        "max_pixels": cfg.dataset.max_image_pixels,
        "storage_uri": storage.uri,
        "cache_rel": cache_rel,
        "cache_dtype": cfg.cache.dtype,
        "flip": cfg.cache.flip,
        "batch_size": cfg.cache.batch_size,
        "stats_seed": cfg.seed,
    }


def _encode_shards(
    cfg: ExperimentConfig,
    storage: Storage,
    cache_rel: str,
    index: pa.Table,
    pending: list[ShardPlan],
    tokenizer_weights: str,
) -> None:
    descriptors = shard_descriptors(index, pending)
    # At most the trial's share of actors (`cache.num_actors`, default the whole share).
    chosen = resources.pool(cfg, "latent cache", cfg.cache.num_actors, items=len(descriptors))
    # Weights travel through the object store (read once here, from a path or a URI), so actors
    # on other nodes need no shared filesystem for the checkpoint.
    weights_ref = ray.put(read_weights(tokenizer_weights)[0])
    written = chosen.map(
        resources.Items(descriptors),
        RayShardEncoder,
        {
            "weights_ref": weights_ref,
            "point": resources.point_id(cfg),
            **shard_encoder_kwargs(
                cfg, storage, cache_rel, device=chosen.device, threads=chosen.threads
            ),
        },
        batch_format="pyarrow",
        # One shard per call: the shard, not the batch, is the unit of atomic write and resume.
        batch_size=1,
    )
    started, done, computed = time.monotonic(), 0, 0.0
    for batch in written:
        for shard, rows, compute_s in zip(batch["shard"], batch["rows"], batch["compute_s"]):
            done += 1
            computed += float(compute_s)
            log.info(
                "latent cache: shard %d written (%d rows); %d/%d this run, %.1f s",
                shard,
                rows,
                done,
                len(descriptors),
                time.monotonic() - started,
            )
    budget.record(computed * chosen.units)


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------
def _manifest(
    cfg: ExperimentConfig,
    storage: Storage,
    cache_rel: str,
    ingested: IngestResult,
    plans: list[ShardPlan],
    tokenizer_weights: str,
    tokenizer_identity: str,
) -> CacheManifest:
    channels = cfg.tokenizer.arch.embed_dim
    grid = latent_grid(cfg)
    family = get_family(cfg.tokenizer.family)
    latent_shape = (channels, grid, grid)
    moments = ChannelMoments.empty(latent_shape, family.position_stats)
    for plan in plans:
        shard_uri = storage.uri_for(cache_rel, shard_file_name(plan.shard_id))
        moments = moments.merge(read_shard_moments(shard_uri))
    stats = {
        "mean": moments.mean.tolist(),
        "std": moments.std().tolist(),
        "samples": moments.count // (1 if family.position_stats else grid * grid),
        "source": (
            "latents of unflipped images"
            if family.frozen_encoder
            else "posterior samples mean + std * eps of unflipped images (seeded)"
        )
        + (", per position over N" if family.position_stats else ", per channel over (N, H, W)")
        + ", unbiased std",
    }
    exported = Artifacts.tokenizer_latent_stats(stage_keys(cfg).tokenizer)
    if storage.exists(exported):
        from safetensors.torch import load as load_safetensors

        tensors = load_safetensors(storage.read_bytes(exported))
        stats = {
            "mean": tensors["mean"].tolist(),
            "std": tensors["std"].tolist(),
            "samples": stats["samples"],
            "source": f"the tokenizer's exported statistics ({storage.uri_for(exported)})",
        }
    return CacheManifest(
        schema_version=SCHEMA_VERSION,
        tokenizer={
            "identity": tokenizer_identity,
            "config_hash": stage_keys(cfg).tokenizer,
            "checkpoint_sha256": file_sha256(tokenizer_weights),
            "arch": tokenizer_spec(cfg).kwargs,
        },
        dataset={
            "identity": ingested.dataset_identity,
            "key": ingested.dataset_key,
            "split": cfg.dataset.train_split,
            "num_classes": ingested.num_classes,
        },
        resolution=cfg.dataset.resolution,
        latent_shape=list(latent_shape),
        dtype=cfg.cache.dtype,
        storage_dtype=STORAGE_DTYPES[cfg.cache.dtype],
        flip=cfg.cache.flip,
        count=sum(len(plan.rows) for plan in plans),
        rows_per_shard=cfg.cache.rows_per_shard,
        shards=[{"file": shard_file_name(plan.shard_id), "rows": len(plan.rows)} for plan in plans],
        columns=[
            "index",
            "image_id",
            "label",
            *moment_columns(cfg.cache.flip, family.frozen_encoder),
        ],
        skipped={
            "by_reason": ingested.skipped,
            "total": sum(ingested.skipped.values()),
            "report": ingested.report_path,
        },
        stats=stats,
        cache_dir=storage.uri_for(cache_rel),
    )
