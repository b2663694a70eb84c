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

import pyarrow.fs as pafs
import ray
from ray.data import DataContext, ExecutionOptions, FileShuffleConfig

from orchestrator.data.manifest import CacheManifest, check_tokenizer, load_manifest
from orchestrator.data.shards import moment_columns


@dataclasses.dataclass
class EpochFileShuffle(FileShuffleConfig):
    """Ray's per-execution file reseed, with executions numbered from `start_epoch`."""

    start_epoch: int = 0

    def get_seed(self, execution_idx: int = 0) -> int:
        # Same formula as FileShuffleConfig.get_seed with reseed_after_execution=True.
        return hash((self.seed, self.start_epoch + execution_idx)) % (2**32)


def latent_dataset(
    manifest_or_dir: CacheManifest | str,
    expected_tokenizer_identity: str,
    seed: int,
    *,
    start_epoch: int = 0,
) -> ray.data.Dataset:
    """The cache's shards as a Ray Dataset, shard order reshuffled per epoch from (seed, epoch).

    Columns: `index`, `label` (int64) and the moment tensors (`mean`, `logvar`, plus
    `mean_flip`, `logvar_flip` when the cache has flips); `image_id` is left out because
    `iter_torch_batches` cannot turn strings into tensors. Raises `TokenizerMismatchError`
    when the cache was made by another tokenizer than `expected_tokenizer_identity`.
    """
    manifest = load_manifest(manifest_or_dir)
    check_tokenizer(manifest, expected_tokenizer_identity)
    filesystem, root = pafs.FileSystem.from_uri(manifest.cache_dir)
    return ray.data.read_parquet(
        [f"{root}/{shard['file']}" for shard in manifest.shards],
        filesystem=filesystem,
        columns=["index", "label", *moment_columns(manifest.flip)],
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
