"""Decoded images/s per data source through the tokenizer's training stream vs a plain PIL loop.

    python benchmarks/ingest_throughput.py [--images 400] [--size 64] [--resolution 32]

One set of images (random PNGs of `--size` px) written three ways, in one run:
`folder` (class folders), `parquet` (Hugging Face layout, via the exporter), `webdataset`
(`<key>.png` + `<key>.cls` tars). Each is ingested (validated on Ray Data, not timed), then one
epoch of `image_stream(...)` on one rank is drained (decode, random crop, Ray Data; timed from
the first `iter_batches` call). The baseline is a single-process PIL loop over the same files:
open, convert to RGB, the same crop. Prints one JSON object; the last line is the ratio of the
slowest source to the PIL loop (> 1: the Ray Data path was faster).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray
from PIL import Image

from orchestrator.config import PRESETS, resolve
from orchestrator.data import StreamLayout, image_stream, ingest
from orchestrator.data.export import export
from orchestrator.storage.store import Storage
from workloads.datasets.transforms import reference_train_preprocess


def write_sets(base: Path, images: int, size: int, classes: int = 10) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    folder = base / "folder"
    tar_root = base / "webdataset"
    tar_root.mkdir(parents=True)
    with tarfile.open(tar_root / "train-000000.tar", "w") as archive:
        for i in range(images):
            pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            data = buffer.getvalue()
            path = folder / "train" / f"c{i % classes}" / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            for name, payload in ((f"{i:06d}.png", data), (f"{i:06d}.cls", str(i % classes))):
                payload = payload if isinstance(payload, bytes) else payload.encode()
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return {"folder": folder, "webdataset": tar_root}


def config(source: str, root: Path, storage: Path, resolution: int):
    base = PRESETS["debug_cpu"]()
    data = replace(base.dataset, source=source, root=str(root), num_classes=10)
    data = replace(data, resolution=resolution, max_images=None)
    return resolve(replace(base, dataset=data, storage=str(storage)))


def drain(cfg, storage: Storage, batch: int) -> tuple[int, float]:
    ingested = ingest(cfg, storage)
    stream = image_stream(ingested, cfg)
    layout = StreamLayout(world_size=1, micro_batch=batch, accumulation=1)
    steps = layout.steps_per_epoch(stream.num_rows)
    dataset = stream.datasets(layout, 0, steps)["train_0"]
    started = time.perf_counter()
    rows = sum(len(b["label"]) for b in dataset.iter_batches(batch_size=batch))
    return rows, time.perf_counter() - started


def plain_loop(folder: Path, resolution: int) -> tuple[int, float]:
    files = sorted(folder.glob("train/*/*.png"))
    started = time.perf_counter()
    for i, path in enumerate(files):
        with Image.open(path) as image:
            reference_train_preprocess(
                image.convert("RGB"), resolution, np.random.default_rng([0, 0, i])
            )
    return len(files), time.perf_counter() - started


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        base = Path(tmp)
        roots = write_sets(base, args.images, args.size)
        storage = Storage.from_uri(str(base / "storage"))
        folder_cfg = config("folder", roots["folder"], base / "storage", args.resolution)
        export(ingest(folder_cfg, storage), base / "parquet", rows_per_shard=200)
        roots["parquet"] = base / "parquet"
        for source in ("folder", "parquet", "webdataset"):
            cfg = config(source, roots[source], base / f"storage-{source}", args.resolution)
            rows, seconds = drain(cfg, Storage.from_uri(cfg.storage), args.batch)
            results[f"{source}_images_per_s"] = rows / seconds
        rows, seconds = plain_loop(roots["folder"], args.resolution)
        results["pil_loop_images_per_s"] = rows / seconds
    slowest = min(v for k, v in results.items() if k != "pil_loop_images_per_s")
    results["ratio"] = slowest / results["pil_loop_images_per_s"]
    print(json.dumps({k: round(v, 2) for k, v in results.items() if k != "ratio"}, indent=2))
    print(f"ratio (slowest source / PIL loop): {results['ratio']:.2f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
