"""A `ray.train.UserCallback` that appends every report's rank-0 metrics to a JSON-lines file.

Train V2 keeps only checkpointed metrics in `Result.metrics`; this keeps all of them, in order,
across worker-group restarts (handy for debugging a run and for tests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ray.train


class MetricsFileCallback(ray.train.UserCallback):
    """Runs on the Train controller: one JSON object per `ray.train.report`, with a
    `checkpointed` flag. The path must be reachable from the controller's node."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        record = {key: _plain(value) for key, value in metrics[0].items()}
        record["checkpointed"] = checkpoint is not None
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _plain(value):
    # JSON has no NaN/Inf: a skipped non-finite step's loss is written as a string.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """The records written by `MetricsFileCallback`, in report order."""
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    return [json.loads(line) for line in lines]
