"""Decoded images of one ingested split: a streaming Ray Dataset, and the tokenizer's stream.

Three views (see `workloads/datasets/transforms.py` for the reference's reasons):
`adm` (ADM centre crop: latent extraction, reference statistics), `resize_center` (torchvision
Resize + CenterCrop: tokenizer evaluation), and for tokenizer training `dataset.train_crop`:
`random` (short side to R, a random R crop keyed by (seed, epoch, row): a new crop every epoch,
the same after a resume on any worker count) or `center` (the ADM crop, fixed).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import ray

from orchestrator.config import ExperimentConfig
from orchestrator.data.ingest import IngestResult
from orchestrator.data.parquet_io import read_table
from orchestrator.data.sources import locator, read_image_bytes
from orchestrator.data.stream import TrainStream
from workloads.datasets.decode import decode_bytes, decode_file
from workloads.datasets.transforms import (
    adm_preprocess,
    reference_train_preprocess,
    resize_center_crop,
)

# Images per block: 64 x 3 x 256 x 256 float32 is 50 MB, well under Ray's 128 MiB block target,
# and ImageNet still yields ~20k blocks to spread over the CPUs.
IMAGES_PER_BLOCK = 64

View = Literal["adm", "resize_center"]


class StaleIndexError(RuntimeError):
    """A file that passed ingestion no longer decodes: the tree changed after ingestion."""


def _decode(path: str, row: int, max_pixels: int):
    if row < 0:
        result = decode_file(path, max_pixels=max_pixels)
    else:
        result = decode_bytes(read_image_bytes(path, row), max_pixels=max_pixels)
    if not result.ok:
        # Never skip silently here: a missing image would shift what training or the cache
        # believe the dataset is. The index was valid at ingestion, so the tree has changed.
        raise StaleIndexError(
            f"{locator(path, row)} passed ingestion but now fails ({result.skip_reason}: {result.detail}); "
            "the dataset changed after ingestion: delete the ingest directory and rerun"
        )
    return result.image


def load_image(
    path: str, *, row: int = -1, resolution: int, max_pixels: int, view: View = "adm"
) -> np.ndarray:
    """Decode one validated image (a file, or `row` of a Parquet shard) into float32
    (3, R, R) in [-1, 1] with the given view."""
    image = _decode(path, row, max_pixels)
    if view == "resize_center":
        return resize_center_crop(image, resolution)
    return adm_preprocess(image, resolution)


def load_images(
    paths: list[str],
    *,
    rows: list[int] | None = None,
    resolution: int,
    max_pixels: int,
    view: View = "adm",
) -> np.ndarray:
    """`load_image` of each (path, row), stacked into float32 (N, 3, R, R)."""
    rows = rows if rows is not None else [-1] * len(paths)
    images = np.empty((len(paths), 3, resolution, resolution), dtype=np.float32)
    for i, (path, row) in enumerate(zip(paths, rows)):
        images[i] = load_image(
            path, row=row, resolution=resolution, max_pixels=max_pixels, view=view
        )
    return images


def _decode_batch(
    batch: pa.Table, resolution: int, max_pixels: int, view: View
) -> dict[str, np.ndarray]:
    return {
        "image": load_images(
            batch["path"].to_pylist(),
            rows=batch["row"].to_pylist(),
            resolution=resolution,
            max_pixels=max_pixels,
            view=view,
        ),
        "label": batch["label"].to_numpy().astype(np.int64),
        "image_id": np.asarray(batch["image_id"].to_pylist(), dtype=object),
    }


def indexed_images(
    ingested: IngestResult,
    cfg: ExperimentConfig,
    split: str,
    *,
    limit: int | None = None,
    view: View = "adm",
) -> IndexedImages:
    """The first `limit` (default all) images of a split's validated index, in index order, with
    a view: a Ray Dataset or a pool's input (`IndexedImages`)."""
    if split not in ingested.index_paths:
        raise KeyError(f"split {split!r} was not ingested (have {sorted(ingested.index_paths)})")
    index = read_table(ingested.index_paths[split], columns=["path", "row", "label", "image_id"])
    if limit is not None:
        index = index.slice(0, limit)
    if len(index) == 0:
        raise ValueError(f"split {split!r} has no valid images")
    return IndexedImages(index, cfg.dataset.resolution, cfg.dataset.max_image_pixels, view)


@dataclass(frozen=True)
class IndexedImages:
    """Rows of a validated index, decoded with a view, as columns `image` (float32 (3, R, R) in
    [-1, 1]), `label` (int64), `image_id` (string): streamed by Ray Data for a pool's actors
    (`dataset`), or decoded in the calling process (`batches`, a pool of size 0)."""

    index: pa.Table
    resolution: int
    max_pixels: int
    view: View

    def dataset(self) -> ray.data.Dataset:
        """Decoding is a streaming `map_batches`, so memory holds a few blocks, not the split.
        Rows come out in completion order (no consumer depends on the order: every row carries
        its `image_id`); training reads `image_stream` instead."""
        blocks = [
            self.index.slice(start, IMAGES_PER_BLOCK)
            for start in range(0, len(self.index), IMAGES_PER_BLOCK)
        ]
        return ray.data.from_arrow(blocks).map_batches(
            _decode_batch,
            batch_format="pyarrow",
            batch_size=IMAGES_PER_BLOCK,
            fn_kwargs={
                "resolution": self.resolution,
                "max_pixels": self.max_pixels,
                "view": self.view,
            },
        )

    def batches(self, batch_size: int, batch_format: str) -> Iterator[dict[str, np.ndarray]]:
        """Numpy batches of `batch_size` decoded images, in index order."""
        if batch_format != "numpy":
            raise ValueError(f"decoded images come as numpy batches, not {batch_format!r}")
        for start in range(0, len(self.index), batch_size):
            yield _decode_batch(
                self.index.slice(start, batch_size), self.resolution, self.max_pixels, self.view
            )


@functools.lru_cache(maxsize=2)
def _index_paths(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Once per worker process: ImageNet's index is ~100 MB of path strings.
    table = read_table(uri, columns=["path", "row", "label"])
    paths = np.asarray(table["path"].to_pylist(), dtype=object)
    return paths, table["row"].to_numpy(), table["label"].to_numpy()


@dataclass(frozen=True)
class ImageRows:
    """The tokenizer's row source: the validated index of a split, decoded on fetch."""

    index_uri: str
    num_rows: int
    resolution: int
    max_pixels: int
    train_crop: Literal["random", "center"]

    @property
    def row_bytes(self) -> int:
        return 3 * self.resolution**2 * 4 + 8  # float32 image, int64 label

    def order(self, seed: int, epoch: int) -> np.ndarray:
        # The index is in class order: a global permutation per epoch, not a local shuffle.
        return np.random.default_rng([seed, epoch]).permutation(self.num_rows)

    def fetch(self, rows: np.ndarray, seed: int, epoch: int) -> dict[str, np.ndarray]:
        paths, locations, labels = _index_paths(self.index_uri)
        images = np.empty((len(rows), 3, self.resolution, self.resolution), dtype=np.float32)
        for i, row in enumerate(rows.tolist()):
            image = _decode(paths[row], int(locations[row]), self.max_pixels)
            if self.train_crop == "random":
                # Keyed by (seed, epoch, row): independent of which task, rank or resume
                # decodes it, and new every epoch.
                rng = np.random.default_rng([seed, epoch, row])
                images[i] = reference_train_preprocess(image, self.resolution, rng)
            else:
                images[i] = adm_preprocess(image, self.resolution)
        return {"image": images, "label": labels[rows].astype(np.int64)}


def image_stream(
    ingested: IngestResult,
    cfg: ExperimentConfig,
    crop: Literal["random", "center"] | None = None,
) -> TrainStream:
    """The training split as a `TrainStream` (order from `cfg.seed`): the tokenizer's, with
    `dataset.train_crop`, or with `crop` (the generator's on-the-fly encoding: `center`, the
    latent cache's view)."""
    split = cfg.dataset.train_split
    if ingested.counts.get(split, 0) == 0:
        raise ValueError(f"split {split!r} has no valid images")
    rows = ImageRows(
        index_uri=ingested.index_paths[split],
        num_rows=ingested.counts[split],
        resolution=cfg.dataset.resolution,
        max_pixels=cfg.dataset.max_image_pixels,
        train_crop=crop or cfg.dataset.train_crop,
    )
    return TrainStream(rows, cfg.seed)
