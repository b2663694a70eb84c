"""Faults on purpose, for tests: never part of the user-facing config schema.

They travel in the train-loop config dict under `debug_hooks`, so a test drives the real driver,
the real Ray Train workers and the real DeepSpeed engine, and only the fault is staged.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DebugHooks:
    """Steps are 1-based global optimizer steps (step s is the s-th update)."""

    # Make the term `nonfinite_term` (and hence the loss) NaN at this step, on rank 0.
    nonfinite_at_step: int | None = None
    nonfinite_term: str = "loss"
    # SIGKILL rank `kill_rank` once, just before step `kill_at_step`; the marker file records
    # that it happened so the restarted worker group does not kill itself again.
    kill_at_step: int | None = None
    kill_rank: int = 1
    kill_marker: str | None = None
    # Checkpoint at this step and leave the loop, as a preempted job would (for resume tests).
    stop_after_step: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> DebugHooks:
        return cls(**(data or {}))

    def poison(
        self, step: int, rank: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The loss to back-propagate; NaN (and `terms[nonfinite_term]` NaN) at the chosen step."""
        if step != self.nonfinite_at_step or rank != 0:
            return loss
        nan = torch.full_like(loss, float("nan"))
        terms[self.nonfinite_term] = nan.detach()
        # `loss * nan` keeps the graph, so backward runs and yields NaN gradients, as a real
        # divergence would.
        return loss * nan

    def maybe_kill(self, step: int, rank: int) -> None:
        """SIGKILL this process once when `step` and `rank` match (a hard worker crash)."""
        if step != self.kill_at_step or rank != self.kill_rank:
            return
        marker = Path(self.kill_marker) if self.kill_marker else None
        if marker is not None and marker.exists():
            return
        if marker is not None:
            marker.write_text(f"killed rank {rank} before step {step}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    def stops_after(self, step: int) -> bool:
        return step == self.stop_after_step
