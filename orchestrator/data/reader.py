"""The latent cache as the generator's `TrainStream`.

Epoch e visits the shards in a permutation seeded by (seed, e) and, inside each shard, the rows
in a permutation seeded by (seed, e, shard): every epoch a new order, a function of (seed, e)
alone, so a resumed or re-scaled run reads what an uninterrupted one would have. Consecutive
positions stay inside one shard (`shards.py` makes every shard a class mix), so a task reads
one or two shards per call, never the whole cache; the last shards read are kept per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from orchestrator.data.manifest import CacheManifest, check_tokenizer, load_manifest
from orchestrator.data.parquet_io import read_table
from orchestrator.data.shards import moment_columns
from orchestrator.data.stream import TrainStream


@functools.lru_cache(maxsize=2)
def _shard(uri: str, columns: tuple[str, ...]) -> pa.Table:
    return read_table(uri, columns=list(columns))


def _column(table: pa.Table, name: str, rows: np.ndarray) -> np.ndarray:
    column = table.column(name).take(pa.array(rows)).combine_chunks()
    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    return column.to_numpy()


@dataclass(frozen=True)
class LatentRows:
    """The generator's row source: the cache's shards, rows numbered shard after shard."""

    shard_uris: tuple[str, ...]
    shard_rows: tuple[int, ...]
    columns: tuple[str, ...]
    row_bytes: int

    @property
    def num_rows(self) -> int:
        return sum(self.shard_rows)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        offsets = np.cumsum((0, *self.shard_rows))
        shards = np.random.default_rng([seed, epoch]).permutation(len(self.shard_rows))
        return np.concatenate(
            [
                offsets[shard]
                + np.random.default_rng([seed, epoch, shard]).permutation(self.shard_rows[shard])
                for shard in shards.tolist()
            ]
        )

    def fetch(self, rows: np.ndarray, seed: int, epoch: int) -> dict[str, np.ndarray]:
        offsets = np.cumsum((0, *self.shard_rows))
        shard_of = np.searchsorted(offsets, rows, side="right") - 1
        # Runs of one shard, in the order asked for.
        cuts = np.flatnonzero(np.diff(shard_of)) + 1
        parts = []
        for run in np.split(np.arange(len(rows)), cuts):
            shard = int(shard_of[run[0]])
            table = _shard(self.shard_uris[shard], self.columns)
            local = rows[run] - offsets[shard]
            parts.append({name: _column(table, name, local) for name in self.columns})
        return {name: np.concatenate([part[name] for part in parts]) for name in self.columns}


def latent_stream(
    manifest_or_dir: CacheManifest | str, expected_tokenizer_identity: str, seed: int
) -> TrainStream:
    """The cache as a `TrainStream`, order from `seed`.

    Columns: `index`, `label` (int64) and the moment tensors (`mean`, `logvar`, plus
    `mean_flip`, `logvar_flip` when the cache has flips). Raises `TokenizerMismatchError`
    when the cache was made by another tokenizer than `expected_tokenizer_identity`.
    """
    manifest = load_manifest(manifest_or_dir)
    check_tokenizer(manifest, expected_tokenizer_identity)
    moments = moment_columns(manifest.flip, manifest.deterministic)
    rows = LatentRows(
        shard_uris=tuple(manifest.shard_uris()),
        shard_rows=tuple(int(shard["rows"]) for shard in manifest.shards),
        columns=("index", "label", *moments),
        # Moments as stored, plus the int64 index and label.
        row_bytes=len(moments)
        * int(np.prod(manifest.latent_shape))
        * np.dtype(manifest.storage_dtype).itemsize
        + 16,
    )
    return TrainStream(rows, seed)
