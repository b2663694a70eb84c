"""This rank's micro-batches, epoch after epoch, in an order that a resumed run reproduces.

Reproducible order needs three things: the driver runs the split with `preserve_order` (Ray
Data's output splitter then hands blocks to ranks deterministically), every epoch's local
shuffle is seeded from (seed, epoch, rank), and a resume re-reads the interrupted epoch and
drops the micro-batches it had already consumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from orchestrator.train.state import TrainState

# Rows buffered for the per-epoch local shuffle (at least this many, or 16 micro-batches).
MIN_SHUFFLE_ROWS = 1024


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def optimizer_steps(
    shard, micro_batch: int, accumulation: int, seed: int, rank: int, state: TrainState
) -> Iterator[list[dict[str, np.ndarray]]]:
    """Endless groups of `accumulation` micro-batches, starting at `state`'s data position.

    `state.epoch` / `state.batches_in_epoch` advance as groups are yielded, so a checkpoint
    taken after a step records where the next step's data starts. A trailing group shorter than
    `accumulation` at the end of an epoch is dropped (every rank drops the same: the split is
    equal).
    """
    while True:
        batches = shard.iter_batches(
            batch_size=micro_batch,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=max(MIN_SHUFFLE_ROWS, 16 * micro_batch),
            local_shuffle_seed=epoch_seed(seed, state.epoch, rank),
            prefetch_batches=4,
        )
        group: list[dict[str, np.ndarray]] = []
        yielded_any = False
        for index, batch in enumerate(batches):
            if index < state.batches_in_epoch:
                continue
            group.append(batch)
            if len(group) == accumulation:
                state.batches_in_epoch = index + 1
                yielded_any = True
                yield group
                group = []
        if not yielded_any and state.batches_in_epoch == 0:
            raise ValueError(
                f"this rank's data shard holds fewer than {micro_batch * accumulation} rows: "
                "lower the global batch size or add data"
            )
        state.epoch += 1
        state.batches_in_epoch = 0
