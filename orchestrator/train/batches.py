"""This rank's micro-batches, step after step, from its dataset of the training stream.

The driver built the dataset from the checkpointed step (`orchestrator/data/stream.py`), so a
resumed run starts at its first unconsumed row. Every row carries the global `step` it belongs
to and the data `epoch`: the groups are checked against the state's step, and the rows of
steps already trained are dropped. That only happens after a worker-group restart inside one
`fit()` (Ray Train hands the new workers the latest checkpoint but the datasets the driver
built at the start of `fit()`); those rows were decoded for nothing, a rare cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from orchestrator.data.stream import RankRows, rank_dataset_name
from orchestrator.train.state import TrainState

# Stream bookkeeping columns, not model inputs.
STREAM_COLUMNS = ("step", "epoch")


def optimizer_steps(
    iterator, micro_batch: int, accumulation: int, state: TrainState
) -> Iterator[list[dict[str, np.ndarray]]]:
    """Groups of `accumulation` micro-batches, one per optimizer step from `state.global_step`.

    `state.epoch` is set to the data epoch of each group as it is yielded, so a checkpoint
    taken after a step records the epoch that step trained on.
    """
    group: list[dict[str, np.ndarray]] = []
    batches = iterator.iter_batches(
        batch_size=micro_batch, batch_format="numpy", drop_last=False, prefetch_batches=4
    )
    for batch in batches:
        step = int(batch["step"][0])
        if step < state.global_step:
            continue
        if step != state.global_step or int(batch["step"][-1]) != step:
            raise RuntimeError(
                f"the data stream is at step {step} but training at {state.global_step}: "
                "the rank's dataset does not match its checkpoint"
            )
        epoch = int(batch["epoch"][0])
        group.append({k: v for k, v in batch.items() if k not in STREAM_COLUMNS})
        if len(group) == accumulation:
            state.epoch = epoch
            yield group
            group = []
    raise RuntimeError(f"the data stream ended before step {state.global_step}")


def rank_iterator(rank: int, rank_rows: list[RankRows] | None):
    """This worker's rows of the training stream: fetched here when the driver chose so (data
    that fits in memory), else its Ray Dataset (`train_<rank>`)."""
    if rank_rows is not None:
        return rank_rows[rank]
    import ray.train

    return ray.train.get_dataset_shard(rank_dataset_name(rank))
