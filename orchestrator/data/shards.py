"""Layout of the latent cache's Parquet shards: assignment, schema, atomic writes, statistics.

Assignment: a seeded permutation of the ingest index is cut into shards of `rows_per_shard`
rows, so shard i's rows are a function of (seed, index length, rows_per_shard) alone: a
rerun after a crash knows which shards exist and which to redo. The permutation (not the sorted
index) makes every shard a mix of all classes; reading whole shards in shuffled order then
still gives class-mixed batches.

Columns: `index` (row of the ingest index), `image_id`, `label`, and per moment (`mean`,
`logvar`, and with flips `mean_flip`, `logvar_flip`; a deterministic encoder's cache has the
means only) an Arrow-native `fixed_shape_tensor` of shape (C, h, w), which any Arrow reader can reshape. Arrow has no bfloat16: a bfloat16 cache
stores the raw 16 bits as uint16 (the manifest says so; the reader views them back).

Each shard is written row group by row group to a temporary name and renamed into place when
complete, with its share of the normalisation statistics in the file's key-value metadata, so
a shard is either absent or whole, and the statistics never need a second pass over the data.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from orchestrator.data.parquet_io import read_schema_metadata
from orchestrator.storage.store import Storage

MOMENTS = ("mean", "logvar")
STATS_KEY = "ldm_frontier.channel_moments"
TEMPORARY_MARK = ".tmp-"
# Arrow/NumPy storage of each cache dtype (bfloat16 travels as its bit pattern).
STORAGE_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "uint16"}


def shard_file_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.parquet"


def moment_columns(flip: bool, deterministic: bool = False) -> tuple[str, ...]:
    """The stored moments: a deterministic encoder (RAE's frozen ViT) has a mean and no logvar,
    and storing a constant logvar would only double a cache that is large already."""
    names = MOMENTS[:1] if deterministic else MOMENTS
    return names + tuple(f"{name}_flip" for name in names) if flip else names


# --------------------------------------------------------------------------------------------
# Assignment
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardPlan:
    """Rows (ingest-index positions, in shard order) of one shard, and which feed the stats."""

    shard_id: int
    rows: np.ndarray
    stats_mask: np.ndarray


def plan_shards(
    num_rows: int, rows_per_shard: int, *, seed: int, stats_samples: int
) -> list[ShardPlan]:
    """Deterministic shard assignment plus the random subset the statistics are computed over."""
    if num_rows < 2:
        raise ValueError(f"a latent cache needs at least 2 images, got {num_rows}")
    order = np.random.default_rng([seed, 0]).permutation(num_rows)
    # The reference draws 10k random images for the statistics; a seeded draw keeps the
    # statistics (and so the normalised training inputs) reproducible.
    selected = np.zeros(num_rows, dtype=bool)
    chosen = np.random.default_rng([seed, 1]).choice(
        num_rows, size=min(stats_samples, num_rows), replace=False
    )
    selected[chosen] = True
    return [
        ShardPlan(shard_id, rows, selected[rows])
        for shard_id, rows in enumerate(
            order[start : start + rows_per_shard] for start in range(0, num_rows, rows_per_shard)
        )
    ]


# --------------------------------------------------------------------------------------------
# Schema and columns
# --------------------------------------------------------------------------------------------
def shard_schema(
    latent_shape: tuple[int, ...], cache_dtype: str, flip: bool, deterministic: bool = False
) -> pa.Schema:
    value_type = pa.from_numpy_dtype(np.dtype(STORAGE_DTYPES[cache_dtype]))
    tensor_type = pa.fixed_shape_tensor(value_type, list(latent_shape))
    fields = [("index", pa.int64()), ("image_id", pa.string()), ("label", pa.int64())]
    return pa.schema(fields + [(name, tensor_type) for name in moment_columns(flip, deterministic)])


def to_storage(values: torch.Tensor, cache_dtype: str) -> np.ndarray:
    """Float moments -> the NumPy array stored for `cache_dtype`."""
    if cache_dtype == "bfloat16":
        return values.to(torch.bfloat16).view(torch.uint16).cpu().numpy()
    return values.to(getattr(torch, cache_dtype)).cpu().numpy()


def from_storage(values: np.ndarray, cache_dtype: str) -> torch.Tensor:
    """Stored array -> float64 tensor of the values a reader will see (for the statistics)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if cache_dtype == "bfloat16":
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(torch.float64)


def tensor_column(values: np.ndarray) -> pa.Array:
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))


# --------------------------------------------------------------------------------------------
# Per-channel (or per-position) statistics, mergeable across shards
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelMoments:
    """Count, mean and sum of squared deviations (M2) per channel, shape (C,), or per position,
    shape (C, H, W), merged with Chan's update."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, latent_shape: tuple[int, int, int], per_position: bool) -> ChannelMoments:
        """No samples yet, for (C, H, W) latents: one entry per channel, or per position."""
        shape = latent_shape if per_position else latent_shape[:1]
        return cls(0, np.zeros(shape), np.zeros(shape))

    @classmethod
    def of(cls, latents: torch.Tensor, per_position: bool = False) -> ChannelMoments:
        """Statistics over (N, H, W) of (N, C, H, W) latents, or over N alone per position."""
        if per_position:
            values = latents.to(torch.float64).numpy()
            mean = values.mean(axis=0)
            return cls(values.shape[0], mean, ((values - mean) ** 2).sum(axis=0))
        flat = latents.to(torch.float64).transpose(0, 1).reshape(latents.shape[1], -1).numpy()
        mean = flat.mean(axis=1)
        return cls(flat.shape[1], mean, ((flat - mean[:, None]) ** 2).sum(axis=1))

    def merge(self, other: ChannelMoments) -> ChannelMoments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        total = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / total)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        return ChannelMoments(total, mean, m2)

    def std(self) -> np.ndarray:
        """Unbiased standard deviation, as the reference's `torch.std`."""
        return np.sqrt(self.m2 / (self.count - 1))

    def to_json(self) -> str:
        return json.dumps({"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()})

    @classmethod
    def from_json(cls, text: str) -> ChannelMoments:
        data = json.loads(text)
        return cls(data["count"], np.asarray(data["mean"]), np.asarray(data["m2"]))


def read_shard_moments(uri: str) -> ChannelMoments:
    """The statistics a shard carries in its metadata (the file's data is not read)."""
    return ChannelMoments.from_json(read_schema_metadata(uri)[STATS_KEY.encode()].decode())


# --------------------------------------------------------------------------------------------
# Atomic shard files
# --------------------------------------------------------------------------------------------
class ShardWriter:
    """Streams row groups into a temporary file; `commit` renames it to the shard's name."""

    def __init__(self, storage: Storage, cache_rel: str, shard_id: int, schema: pa.Schema):
        self._filesystem = storage.filesystem
        storage.makedirs(cache_rel)
        self.final_path = storage.path(cache_rel, shard_file_name(shard_id))
        self._temporary_path = f"{self.final_path}{TEMPORARY_MARK}{uuid.uuid4().hex[:8]}"
        self._stream = self._filesystem.open_output_stream(self._temporary_path)
        self._writer = pq.ParquetWriter(self._stream, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self, moments: ChannelMoments) -> None:
        self._writer.add_key_value_metadata({STATS_KEY: moments.to_json()})
        self._writer.close()
        self._stream.close()
        # rename(2) on local/NFS storage: readers see no file or the whole file, never a part.
        self._filesystem.move(self._temporary_path, self.final_path)


def remove_temporaries(storage: Storage, cache_rel: str) -> int:
    """Delete half-written shards left by a killed build; returns how many.

    Callers hold the stage lock (`orchestrator.locks.stage_lock`), so no live build of the same
    cache is writing them.
    """
    leftovers = [name for name in storage.listdir(cache_rel) if TEMPORARY_MARK in name]
    for name in leftovers:
        storage.delete(cache_rel, name)
    return len(leftovers)
