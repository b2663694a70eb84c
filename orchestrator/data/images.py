"""Decoded, ADM-cropped images of one ingested split as a streaming Ray Dataset."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from orchestrator.config import ExperimentConfig
from orchestrator.data.ingest import IngestResult
from orchestrator.data.parquet_io import read_table
from workloads.datasets.decode import decode_file
from workloads.datasets.transforms import adm_preprocess

# Images per block: 64 x 3 x 256 x 256 float32 is 50 MB, well under Ray's 128 MiB block target,
# and ImageNet still yields ~20k blocks to spread over the CPUs.
IMAGES_PER_BLOCK = 64


class StaleIndexError(RuntimeError):
    """A file that passed ingestion no longer decodes: the tree changed after ingestion."""


def load_image(path: str, *, resolution: int, max_pixels: int) -> np.ndarray:
    """Decode and ADM-crop one validated file into float32 (3, R, R) in [-1, 1]."""
    result = decode_file(path, max_pixels=max_pixels)
    if not result.ok:
        # Never skip silently here: a missing image would shift what training or the cache
        # believe the dataset is. The index was valid at ingestion, so the tree has changed.
        raise StaleIndexError(
            f"{path} passed ingestion but now fails ({result.skip_reason}: {result.detail}); "
            "the dataset changed after ingestion: delete the ingest directory and rerun"
        )
    return adm_preprocess(result.image, resolution)


def load_images(paths: list[str], *, resolution: int, max_pixels: int) -> np.ndarray:
    """`load_image` of each path, stacked into float32 (N, 3, R, R)."""
    images = np.empty((len(paths), 3, resolution, resolution), dtype=np.float32)
    for i, path in enumerate(paths):
        images[i] = load_image(path, resolution=resolution, max_pixels=max_pixels)
    return images


def _decode_batch(batch: pa.Table, resolution: int, max_pixels: int) -> dict[str, np.ndarray]:
    return {
        "image": load_images(
            batch["path"].to_pylist(), resolution=resolution, max_pixels=max_pixels
        ),
        "label": batch["label"].to_numpy().astype(np.int64),
        "image_id": np.asarray(batch["image_id"].to_pylist(), dtype=object),
    }


def image_dataset(
    ingested: IngestResult,
    cfg: ExperimentConfig,
    split: str,
    *,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    repeats: int = 1,
) -> ray.data.Dataset:
    """Columns `image` (float32 (3, R, R) in [-1, 1]), `label` (int64), `image_id` (string).

    Built from the validated index, in index order for the first `limit` rows; decoding is a
    streaming `map_batches`, so memory holds a few blocks, not the split. For training,
    `shuffle_seed` permutes the rows (the index is in class order, and a local shuffle buffer
    alone would leave batches of few classes) and `repeats` chains that many differently
    permuted passes into one execution (see `reader.passes_per_execution`).
    """
    if split not in ingested.index_paths:
        raise KeyError(f"split {split!r} was not ingested (have {sorted(ingested.index_paths)})")
    index = read_table(ingested.index_paths[split], columns=["path", "label", "image_id"])
    if limit is not None:
        index = index.slice(0, limit)
    if len(index) == 0:
        raise ValueError(f"split {split!r} has no valid images")
    if shuffle_seed is not None or repeats > 1:
        index = pa.concat_tables(
            index
            if shuffle_seed is None
            else index.take(np.random.default_rng([shuffle_seed, copy]).permutation(len(index)))
            for copy in range(repeats)
        )
    blocks = [
        index.slice(start, IMAGES_PER_BLOCK) for start in range(0, len(index), IMAGES_PER_BLOCK)
    ]
    return ray.data.from_arrow(blocks).map_batches(
        _decode_batch,
        batch_format="pyarrow",
        batch_size=IMAGES_PER_BLOCK,
        fn_kwargs={
            "resolution": cfg.dataset.resolution,
            "max_pixels": cfg.dataset.max_image_pixels,
        },
    )
