"""Reading a latent cache for `TorchTrainer(datasets={"train": latent_dataset(...)})`.

Shuffling is file-level (whole shards in a new order each epoch; `shards.py` makes every shard
a class mix), the cheapest shuffle Ray Data has. Determinism:

- The shard order of epoch e is a function of (seed, e) alone: Ray reseeds a file shuffle per
  execution of the dataset (`hash((seed, execution_index))`), and `EpochFileShuffle` adds
  `start_epoch` to that index, so a driver that resumes at epoch e passes `start_epoch=e` and
  gets the order an uninterrupted run would have had. Build the dataset fresh for each
  `TorchTrainer` and do not execute it on the driver first: every execution advances the index.
  A worker-group restart inside one `fit()` re-splits the original dataset, so its epochs
  count again from `start_epoch`; exact in that case needs a driver-level restart.
- With 1 worker and `latent_ingest_options()` (preserve_order), the row sequence of each epoch
  is fixed. With N workers, Train's `streaming_split(N, equal=True)` hands blocks to the worker
  with the fewest rows so far; under preserve_order that is a deterministic function of
  (seed, epoch, N), so each worker's sequence is reproducible for the same N (not across N).
  Without preserve_order only the epoch's shard permutation is fixed; which worker reads which
  shard, and in what interleaving, follows task completion order.
- Rows within a shard keep their order every epoch; for more mixing add
  `iter_torch_batches(local_shuffle_buffer_size=..., local_shuffle_seed=f(seed, epoch))`.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pyarrow.fs as pafs
import ray
from ray.data import DataContext, ExecutionOptions, FileShuffleConfig

from orchestrator.data.manifest import CacheManifest, check_tokenizer, load_manifest
from orchestrator.data.parquet_io import read_table
from orchestrator.data.shards import moment_columns


@dataclasses.dataclass
class EpochFileShuffle(FileShuffleConfig):
    """Ray's per-execution file reseed, with executions numbered from `start_epoch`."""

    start_epoch: int = 0

    def get_seed(self, execution_idx: int = 0) -> int:
        # Same formula as FileShuffleConfig.get_seed with reseed_after_execution=True.
        return hash((self.seed, self.start_epoch + execution_idx)) % (2**32)


# Every execution of a dataset (one per pass over it) restarts Ray Data's pipeline, a few
# seconds; a tiny dataset chains passes so that one execution covers at least this many rows.
MIN_ROWS_PER_EXECUTION = 20_000
# Caches up to this size are served from Ray's object store instead of Parquet reads: on a
# laptop a Parquet pass over a small cache costs seconds of task start-up per epoch.
IN_MEMORY_BYTES = 256 * 2**20


def passes_per_execution(num_rows: int) -> int:
    """1 for any real dataset; for tiny ones, enough passes to amortise the pipeline start."""
    return max(1, math.ceil(MIN_ROWS_PER_EXECUTION / max(num_rows, 1)))


def cache_bytes(manifest: CacheManifest) -> int:
    per_value = 2 if manifest.storage_dtype in ("float16", "bfloat16") else 4
    tensors = len(moment_columns(manifest.flip))
    return manifest.count * tensors * math.prod(manifest.latent_shape) * per_value


def latent_dataset(
    manifest_or_dir: CacheManifest | str,
    expected_tokenizer_identity: str,
    seed: int,
    *,
    start_epoch: int = 0,
    repeats: int = 1,
) -> ray.data.Dataset:
    """The cache's shards as a Ray Dataset, shard order reshuffled from (seed, epoch).

    Columns: `index`, `label` (int64) and the moment tensors (`mean`, `logvar`, plus
    `mean_flip`, `logvar_flip` when the cache has flips); `image_id` is left out because
    `iter_torch_batches` cannot turn strings into tensors. Raises `TokenizerMismatchError`
    when the cache was made by another tokenizer than `expected_tokenizer_identity`.

    A large cache streams from Parquet with a file shuffle per execution (`EpochFileShuffle`).
    A small one (`IN_MEMORY_BYTES`) is read once into the object store as `repeats` copies of
    its shards, each copy in its own seeded order: one execution then spans `repeats` passes.
    """
    manifest = load_manifest(manifest_or_dir)
    check_tokenizer(manifest, expected_tokenizer_identity)
    columns = ["index", "label", *moment_columns(manifest.flip)]
    uris = manifest.shard_uris()
    if cache_bytes(manifest) <= IN_MEMORY_BYTES:
        tables = [read_table(uri, columns=columns) for uri in uris]
        order = [
            index
            for copy in range(repeats)
            for index in np.random.default_rng([seed, start_epoch + copy]).permutation(len(uris))
        ]
        return ray.data.from_arrow([tables[i] for i in order])
    filesystem, root = pafs.FileSystem.from_uri(manifest.cache_dir)
    return ray.data.read_parquet(
        [f"{root}/{shard['file']}" for shard in manifest.shards],
        filesystem=filesystem,
        columns=columns,
        shuffle=EpochFileShuffle(seed=seed, start_epoch=start_epoch),
    )


def latent_ingest_options() -> ExecutionOptions:
    """Execution options for `ray.train.DataConfig(execution_options={"train": ...})` that make
    every worker's row sequence reproducible (the current context's options + preserve_order).

    Train's `DataConfig` replaces the dataset's own options with these or with the driver
    context's defaults, so setting preserve_order on the dataset alone is not enough.
    """
    options = copy.deepcopy(DataContext.get_current().execution_options)
    options.preserve_order = True
    return options
