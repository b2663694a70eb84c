"""Latent-cache throughput: the Ray Data pipeline vs a plain single-process loop, and the reader.

    python benchmarks/cache_throughput.py [--images 6400] [--resolution 32] [--actors 2]
        [--out result.json]

Same tokenizer (random init, the `debug_cpu` architecture), same images (the embedded dataset),
same machine, one run each:

- `plain_loop`: one process runs `ShardEncoder.encode_shard` over every shard (decode, ADM crop,
  encode image + flip, write the shard): exactly the work of one actor, without Ray.
- `ray_data`: `build_latent_cache` end to end (actor start-up, scheduling and manifest included).
- `reader`: latents/s delivered by `latent_stream(...)`'s rank dataset `.iter_torch_batches()` through
  `LatentBatchSampler` to a training loop with no model.

Prints one JSON object (and writes it to `--out`). `ratio` > 1 means Ray Data was faster.
Ray Data pays ~3 s of actor start-up once: measured on 2 cores at 32 px, 1,600 images give
0.66 and 6,400 give 1.02 (the default, where the pipeline rather than the start-up is timed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch
from safetensors.torch import load_file, save_file

from orchestrator.config import PRESETS, ExperimentConfig, resolve, stage_keys
from orchestrator.config.schema import EmbeddedDatasetConfig
from orchestrator.data import (
    LatentBatchSampler,
    StreamLayout,
    build_latent_cache,
    ingest,
    latent_stream,
    tokenizer_identity,
)
from orchestrator.data.cache import shard_descriptors, shard_encoder_kwargs
from orchestrator.data.encoder import ShardEncoder
from orchestrator.data.parquet_io import read_table
from orchestrator.data.shards import plan_shards
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.models import autoencoder_kwargs
from orchestrator.storage.store import Storage
from workloads.vavae import AutoencoderKL


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6400, help="training images to cache")
    # 32 px by default: at the smoke sweep's 16 px an image is ~1 ms of work and the actors'
    # start-up, not the pipeline, is what gets measured.
    parser.add_argument("--resolution", type=int, default=32, help="training resolution")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data encoder actors")
    parser.add_argument("--batch-size", type=int, default=32, help="encoder sub-batch")
    parser.add_argument("--shards", type=int, default=8, help="shards the images are cut into")
    parser.add_argument("--reader-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def benchmark_config(args: argparse.Namespace, storage: Path) -> ExperimentConfig:
    base = PRESETS["debug_cpu"]()
    classes = 10
    embedded = EmbeddedDatasetConfig(
        num_classes=classes,
        image_size=32,
        train_per_class=-(-args.images // classes),
        val_per_class=1,
    )
    cores = os.cpu_count() or 1
    return resolve(
        replace(
            base,
            dataset=replace(
                base.dataset, resolution=args.resolution, max_images=args.images, embedded=embedded
            ),
            cache=replace(
                base.cache,
                rows_per_shard=-(-args.images // args.shards),
                batch_size=args.batch_size,
                num_actors=args.actors,
            ),
            # The actors split the machine's cores between them.
            resources=replace(base.resources, cpus_per_worker=max(1, cores // args.actors)),
            storage=str(storage),
        )
    )


def plain_loop(cfg: ExperimentConfig, storage: Storage, ingested, weights: str) -> dict:
    index = read_table(ingested.index_paths[cfg.dataset.train_split])
    plans = plan_shards(
        len(index), cfg.cache.rows_per_shard, seed=cfg.seed, stats_samples=cfg.cache.stats_samples
    )
    threads = torch.get_num_threads()
    started = time.perf_counter()
    encoder = ShardEncoder(
        state_dict=load_file(weights),
        **shard_encoder_kwargs(cfg, storage, "plain_loop", device="cpu", threads=threads),
    )
    for descriptor in shard_descriptors(index, plans):
        encoder.encode_shard(descriptor)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images_per_s": len(index) / seconds, "torch_threads": threads}


def ray_pipeline(cfg, storage: Storage, ingested, weights: str, identity: str) -> dict:
    started = time.perf_counter()
    manifest = build_latent_cache(cfg, storage, ingested, weights, identity)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "images_per_s": manifest.count / seconds,
        "actors": cfg.cache.num_actors,
        "cpus_per_actor": int(cfg.resources.cpus_per_worker),
        "manifest": manifest,
    }


def reader(manifest, identity: str, epochs: int, batch_size: int = 256) -> dict:
    sampler = LatentBatchSampler(manifest.latent_stats(), flip=manifest.flip)
    generator = torch.Generator().manual_seed(0)
    stream = latent_stream(manifest, identity, seed=0)
    layout = StreamLayout(world_size=1, micro_batch=batch_size, accumulation=1)
    steps = layout.steps_per_epoch(stream.num_rows)
    delivered = after_first = 0
    total = startup = 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        dataset = stream.datasets(layout, epoch * steps, (epoch + 1) * steps)["train_0"]
        batches = dataset.drop_columns(["step", "epoch"]).iter_torch_batches(batch_size=batch_size)
        for step, batch in enumerate(batches):
            z, _ = sampler(batch, generator)
            delivered += z.shape[0]
            if step == 0:
                startup += time.perf_counter() - started
            else:
                after_first += z.shape[0]
        total += time.perf_counter() - started
    return {
        "latents_per_s": delivered / total,
        # Excluding each epoch's start-up (one Ray Data execution, seconds on 2 cores), which
        # dominates on a cache this small and is amortised on a real one.
        "steady_latents_per_s": after_first / max(total - startup, 1e-9),
        "startup_s_per_epoch": startup / epochs,
        "epochs": epochs,
        "batch_size": batch_size,
        "latent_shape": manifest.latent_shape,
    }


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        cfg = benchmark_config(args, Path(tmp))
        storage = Storage.from_uri(cfg.storage)
        ray.init(
            address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            ingested = ingest(cfg, storage)
            torch.manual_seed(0)
            weights = str(Path(tmp) / "tokenizer.safetensors")
            save_file(AutoencoderKL(**autoencoder_kwargs(cfg)).state_dict(), weights)
            identity = tokenizer_identity(stage_keys(cfg).tokenizer, weights)
            plain = plain_loop(cfg, storage, ingested, weights)
            ray_data = ray_pipeline(cfg, storage, ingested, weights, identity)
            manifest = ray_data.pop("manifest")
            delivered = reader(manifest, identity, args.reader_epochs)
        finally:
            ray.shutdown()
        result = {
            "images": manifest.count,
            "resolution": cfg.dataset.resolution,
            "tokenizer": autoencoder_kwargs(cfg),
            "cache_dir": Artifacts.cache(stage_keys(cfg).cache),
            "cpus": os.cpu_count(),
            "plain_loop": plain,
            "ray_data": ray_data,
            "ratio": ray_data["images_per_s"] / plain["images_per_s"],
            "reader": delivered,
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
