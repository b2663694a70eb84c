"""The training stream: each rank's rows, step by step, in an order fixed by (seed, epoch).

One rule serves both workloads and every source. Epoch e visits the rows in `source.order(seed,
e)`, a permutation that depends on (seed, e) alone, and uses its first `steps_per_epoch x
global_batch` positions (the tail, different rows every epoch, is dropped so that no step
straddles two epochs). Global step s reads the positions `[s' * G, (s' + 1) * G)` of epoch
`s // steps_per_epoch` (s' = s mod steps_per_epoch, G the global batch); rank r takes the r-th
run of `micro_batch x accumulation` of them, cut into micro-batches in order.

Every rank gets its own Ray Dataset (`train_0`, `train_1`, ...) over the steps it still has to
train, built on the driver from the run's checkpointed step. So a resume starts at the first
unconsumed row without decoding a single consumed one, on any worker count (the positions of
step s do not depend on N; with one rank per world size each rank's share is explicit), and
the whole run is one execution of each dataset: no per-epoch pipeline restarts, and the
`epoch` a row carries is the data's epoch. Order within a rank's dataset matters (it is what
a resume reproduces), so the driver runs these datasets with `preserve_order`; Ray Data still
decodes blocks in parallel and only hands them out in order. Stream splitting
(`streaming_split`) is not used: it assigns blocks to ranks by arrival, and the consumed rows
would then not be a prefix of the epoch that a restarted driver could skip.

Data that fits in memory (`resources.in_worker_data_mb`, as read) skips the pipeline: each rank
fetches the same rows of the same steps in its own process (`RankRows`). A Ray Data pipeline
per rank costs a dataset-manager actor and pooled decode workers, each importing torch, plus an
executor thread polling beside the training loop: on a laptop that was more CPU than fetching a
few thousand small images inline. The rows, their order and the resume rule are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import ray

# Rows a decode task produces per call: small enough to stream, large enough that task overhead
# stays small (64 images at 256^2 float32 are 50 MB).
ROWS_PER_CALL = 64


class RowSource(Protocol):
    """Where rows come from: a fixed number of rows (of `row_bytes` each as read), an epoch's
    order, and a fetch by row id."""

    num_rows: int
    row_bytes: int

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """Row ids of epoch `epoch` in visiting order (a permutation of 0..num_rows-1)."""

    def fetch(self, rows: np.ndarray, seed: int, epoch: int) -> dict[str, np.ndarray]:
        """The training columns of `rows`, in that order (`epoch` keys any augmentation)."""


@dataclass(frozen=True)
class StreamLayout:
    """How a global step's rows are shared: `world_size` ranks x `accumulation` micro-batches."""

    world_size: int
    micro_batch: int
    accumulation: int

    @property
    def rank_rows(self) -> int:
        return self.micro_batch * self.accumulation

    @property
    def global_batch(self) -> int:
        return self.rank_rows * self.world_size

    def steps_per_epoch(self, num_rows: int) -> int:
        return num_rows // self.global_batch

    def positions(self, step: int, rank: int, num_rows: int) -> tuple[int, slice]:
        """(epoch, positions in that epoch's order) that rank `rank` trains on at step `step`."""
        per_epoch = self.steps_per_epoch(num_rows)
        epoch, within = divmod(step, per_epoch)
        start = within * self.global_batch + rank * self.rank_rows
        return epoch, slice(start, start + self.rank_rows)


@functools.lru_cache(maxsize=4)
def _epoch_order(source: RowSource, seed: int, epoch: int) -> np.ndarray:
    # A decode task handles a run of consecutive steps, nearly always of one epoch: the
    # permutation (tens of ms for ImageNet) is computed once per process and epoch.
    return source.order(seed, epoch)


def _rank_rows(
    batch: dict[str, np.ndarray],
    source: RowSource,
    seed: int,
    layout: StreamLayout,
    rank: int,
    start_step: int,
) -> dict[str, np.ndarray]:
    parts = []
    for step in (batch["id"] + start_step).tolist():
        epoch, positions = layout.positions(step, rank, source.num_rows)
        rows = _epoch_order(source, seed, epoch)[positions]
        columns = source.fetch(rows, seed, epoch)
        columns["step"] = np.full(len(rows), step, np.int64)
        columns["epoch"] = np.full(len(rows), epoch, np.int64)
        parts.append(columns)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


@dataclass(frozen=True)
class TrainStream:
    """A row source and the seed of its order; `datasets` cuts it into per-rank datasets."""

    source: RowSource
    seed: int

    @property
    def num_rows(self) -> int:
        return self.source.num_rows

    def fits_in(self, megabytes: float) -> bool:
        """Whether every row together, as read (`RowSource.row_bytes`), takes at most
        `megabytes`."""
        return self.num_rows * self.source.row_bytes <= megabytes * 2**20

    def _steps(self, layout: StreamLayout, start_step: int, end_step: int) -> int:
        """Steps a rank's rows span from `start_step`: at least one (a run resumed at its last
        checkpoint only exports, but its stream must not be empty)."""
        if layout.steps_per_epoch(self.num_rows) == 0:
            raise ValueError(
                f"{self.num_rows} training rows give no full step of global batch "
                f"{layout.global_batch}: lower the global batch size or add data"
            )
        return max(end_step - start_step, 1)

    def rank_rows(self, layout: StreamLayout, start_step: int, end_step: int) -> list[RankRows]:
        """Per rank, its rows of steps [start_step, end_step), fetched in the rank's process."""
        stop = start_step + self._steps(layout, start_step, end_step)
        return [
            RankRows(self.source, self.seed, layout, rank, start_step, stop)
            for rank in range(layout.world_size)
        ]

    def datasets(
        self, layout: StreamLayout, start_step: int, end_step: int
    ) -> dict[str, ray.data.Dataset]:
        """`train_<rank>`: that rank's rows of steps [start_step, end_step), in step order."""
        steps = self._steps(layout, start_step, end_step)
        steps_per_call = max(1, ROWS_PER_CALL // layout.rank_rows)
        return {
            rank_dataset_name(rank): ray.data.range(steps).map_batches(
                _rank_rows,
                batch_size=steps_per_call,
                batch_format="numpy",
                fn_kwargs={
                    "source": self.source,
                    "seed": self.seed,
                    "layout": layout,
                    "rank": rank,
                    "start_step": start_step,
                },
            )
            for rank in range(layout.world_size)
        }


@dataclass(frozen=True)
class RankRows:
    """One rank's rows of steps [start_step, end_step), fetched where they are iterated: the
    `iter_batches` of a rank's Ray Dataset, row for row, without the pipeline."""

    source: RowSource
    seed: int
    layout: StreamLayout
    rank: int
    start_step: int
    end_step: int

    def iter_batches(self, *, batch_size: int, **_ray_only) -> Iterator[dict[str, np.ndarray]]:
        # Numpy batches, always. `_ray_only`: the format, `drop_last` and `prefetch_batches` of
        # Ray's iterator, which `train/batches.py` passes; a step's rows are whole micro-batches.
        for offset in range(self.end_step - self.start_step):
            step = {"id": np.array([offset])}
            rows = _rank_rows(step, self.source, self.seed, self.layout, self.rank, self.start_step)
            for start in range(0, self.layout.rank_rows, batch_size):
                yield {name: values[start : start + batch_size] for name, values in rows.items()}


def rank_dataset_name(rank: int) -> str:
    return f"train_{rank}"
