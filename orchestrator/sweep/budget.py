"""Where a sweep's machine time goes: computing (inside steps and evaluation batches) vs the rest.

Every stage measures the seconds its workers spend computing — inside optimizer steps, inside
the batches of reconstruction scoring, latent caching, sampling and feature extraction, inside
the shared networks' training — times the compute units each worker holds (its CPUs, or its GPU
on a GPU run): *unit-seconds*. A trial's driver keeps them per stage next to the stage's wall
seconds (`compute/<stage>_s` beside `time/<stage>_s`, logged to the point's run). The sweep's
summary divides the sum by wall time x the cluster's units: the share of the machine that went
into learning and measuring. The rest is process start-up and imports, scheduling, data I/O,
checkpoints and waiting.

A stage that was already done (its `DONE.json` read back) computes nothing and counts 0.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

COMPUTE_PREFIX = "compute/"
TIME_PREFIX = "time/"


class ComputeClock:
    """Seconds spent inside `with clock:` blocks (not re-entrant)."""

    def __init__(self):
        self.seconds = 0.0
        self._began: float | None = None

    def __enter__(self) -> ComputeClock:
        self._began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._began
        self._began = None


class StageLedger:
    """One point's stages as they run: wall seconds each, and the unit-seconds they computed."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.compute: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, title: str) -> None:
        self.stop()
        self._current = (title.replace(" ", "_"), time.perf_counter())
        self.compute.setdefault(self._current[0], 0.0)

    def add(self, unit_seconds: float) -> None:
        if self._current is not None:
            self.compute[self._current[0]] += unit_seconds

    def absorb(self, timings: dict[str, float]) -> None:
        """Stages that ran elsewhere inside the current one (a point's later stages in the
        tokenizer's Train run, `train/point.py`): their wall and compute seconds count as
        theirs, and their wall no longer as the current stage's."""
        for key, value in timings.items():
            if key.startswith(TIME_PREFIX):
                name = key.removeprefix(TIME_PREFIX).removesuffix("_s")
                self.wall[name] = self.wall.get(name, 0.0) + value
                if self._current is not None:
                    current, began = self._current
                    self._current = (current, began + value)
            elif key.startswith(COMPUTE_PREFIX):
                name = key.removeprefix(COMPUTE_PREFIX).removesuffix("_s")
                self.compute[name] = self.compute.get(name, 0.0) + value

    def stop(self) -> dict[str, float]:
        """`time/<stage>_s` and `compute/<stage>_s` of every stage so far."""
        if self._current is not None:
            name, began = self._current
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - began
            self._current = None
        return {
            **{f"{TIME_PREFIX}{k}_s": v for k, v in self.wall.items()},
            **{f"{COMPUTE_PREFIX}{k}_s": v for k, v in self.compute.items()},
        }


# The ledger of the point this process drives (a Tune trial runs one point per process); stages
# report into it without every stage function passing it along.
_ledger: StageLedger | None = None


@contextmanager
def point_ledger():
    """The ledger that `record` adds to while one point runs in this process."""
    global _ledger
    previous, _ledger = _ledger, StageLedger()
    try:
        yield _ledger
    finally:
        _ledger = previous


def record(unit_seconds: float) -> None:
    """Add a stage's computed unit-seconds to the running point's current stage (a no-op when
    no point runs here: a stage called on its own, in a test or a tool)."""
    if _ledger is not None:
        _ledger.add(unit_seconds)


def absorb(timings: dict[str, float]) -> None:
    """`StageLedger.absorb` on the running point's ledger (a no-op outside a point)."""
    if _ledger is not None:
        _ledger.absorb(timings)


@contextmanager
def computing_here(units: float | None = None):
    """Count the block as compute of this process: with all its torch threads (the driver's own
    training of the shared networks), or as `units` (one core for a metric's reductions)."""
    clock = ComputeClock()
    with clock:
        yield
    if units is None:
        import torch

        units = torch.get_num_threads()
    record(clock.seconds * units)


def per_row(seconds: float, rows: int):
    """A batch's compute seconds spread over its rows (a column the driver sums back)."""
    import numpy as np

    return np.full(rows, seconds / max(rows, 1), dtype=np.float64)


def compute_share(compute_unit_seconds: float, wall_seconds: float, units: float) -> float:
    """Share of the cluster's unit-seconds (`units` x wall) spent computing."""
    return compute_unit_seconds / max(wall_seconds * units, 1e-9)


def total_compute(metrics: dict[str, float]) -> float:
    """A point's computed unit-seconds over all its stages."""
    return sum(v for k, v in metrics.items() if k.startswith(COMPUTE_PREFIX))
