"""The Ray Data actor pools of the evaluation stages: how big one is, and what it returns.

Every pool is sized by the resource policy (`sweep/resources.py`: at most the trial's share);
its output is gathered on the driver, whose budget gets the seconds the actors computed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from orchestrator.config import ExperimentConfig
from orchestrator.sweep import budget, resources


def actor_pool(cfg: ExperimentConfig) -> tuple[dict, resources.Pool]:
    """(actor plan, the pool) of an evaluation stage: at most the trial's share of actors
    (`evaluation.num_workers`, default the whole share; 0: the trial's own process)."""
    chosen = resources.pool(cfg, "evaluation", cfg.evaluation.num_workers)
    actor = {"threads": chosen.threads, "device": chosen.device, "point": resources.point_id(cfg)}
    return actor, chosen


def gather_columns(
    batches: Iterable[dict[str, np.ndarray]], units: float, caps: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Every column of a pool's output batches (`Pool.map`), in order (a column named in
    `caps` stops growing once it holds that many rows); its `compute_s` (seconds inside the
    actors' batches) goes to the running point's budget as unit-seconds."""
    caps = caps or {}
    columns: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, values in batch.items():
            if name in caps and sum(map(len, columns.get(name, []))) >= caps[name]:
                continue
            columns.setdefault(name, []).append(values)
    data = {name: np.concatenate(parts) for name, parts in columns.items()}
    if "compute_s" in data:
        budget.record(float(data.pop("compute_s").sum()) * units)
    return data
