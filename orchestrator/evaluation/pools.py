"""The Ray Data actor pools of the evaluation stages: how big one is, and what it returns.

Every pool is sized by the resource policy (`sweep/resources.py`: at most the trial's share);
its output is gathered on the driver, whose budget gets the seconds the actors computed.
"""

from __future__ import annotations

import numpy as np
import ray

from orchestrator.config import ExperimentConfig
from orchestrator.sweep import budget, resources


def actor_pool(
    cfg: ExperimentConfig,
) -> tuple[ray.data.ActorPoolStrategy, dict, dict, resources.Pool]:
    """(pool strategy, per-actor Ray resources, actor plan, the pool) of an evaluation stage: at
    most the trial's share of actors (`evaluation.num_workers`, default the whole share)."""
    chosen = resources.pool(cfg, "evaluation", cfg.evaluation.num_workers)
    actor = {"threads": chosen.threads, "device": chosen.device, "point": resources.point_id(cfg)}
    return ray.data.ActorPoolStrategy(size=chosen.size), chosen.ray_args, actor, chosen


def gather_columns(
    scored: ray.data.Dataset, units: float, caps: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Every column of an actor pool's output, in order (a column named in `caps` stops growing
    once it holds that many rows); its `compute_s` (seconds inside the actors' batches) goes to
    the running point's budget as unit-seconds."""
    caps = caps or {}
    columns: dict[str, list[np.ndarray]] = {}
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for name, values in batch.items():
            if name in caps and sum(map(len, columns.get(name, []))) >= caps[name]:
                continue
            columns.setdefault(name, []).append(values)
    data = {name: np.concatenate(parts) for name, parts in columns.items()}
    if "compute_s" in data:
        budget.record(float(data.pop("compute_s").sum()) * units)
    return data
