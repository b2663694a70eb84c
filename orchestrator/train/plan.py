"""The train-loop config: what the driver hands `train_loop_per_worker`, as a plain dict.

The resolved `ExperimentConfig` travels as a dict (Ray pickles it to every worker) together with
what the driver derived from it and from the data: the workload, its stages and their lengths
in optimizer steps, the per-rank micro-batch, where the run lives, inputs the workload needs
(frozen-model weights, latent statistics), the MLflow run to log into and the debug hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.config import ExperimentConfig
from orchestrator.config.loading import from_dict
from orchestrator.config.schema import TrainingConfig
from orchestrator.train.hooks import DebugHooks

if TYPE_CHECKING:
    # Not at run time: the CLI plans (`sweep/cost.py`) import this module before Ray may load.
    from orchestrator.data.stream import RankRows
    from orchestrator.train.point import PointFollowUp

WORKLOADS = ("tokenizer", "generator")


@dataclass(frozen=True)
class StagePlan:
    """One stage of a workload: its name, its length and its objective overrides."""

    name: str
    steps: int
    overrides: dict = field(default_factory=dict)


def run_length(stages: tuple[StagePlan, ...]) -> int:
    """Optimizer steps of a run: its stages' together."""
    return sum(stage.steps for stage in stages)


@dataclass(frozen=True)
class TrainPlan:
    workload: str
    experiment: dict
    stages: tuple[StagePlan, ...]
    micro_batch: int
    storage_uri: str
    run_rel: str
    inputs: dict = field(default_factory=dict)
    run_ref: dict | None = None
    debug_hooks: dict = field(default_factory=dict)
    # The sweep's live view name of this point (rank 0 posts its step there); None outside sweeps.
    progress: str | None = None
    # Checkpoint at this global step and leave the loop (training in rounds, for ASHA).
    stop_after_step: int | None = None
    # Per rank, its rows when it fetches them itself (data that fits in memory); None: each
    # rank reads its Ray Dataset `train_<rank>` (`orchestrator/data/stream.py`).
    rank_rows: list[RankRows] | None = None
    # The tokenizer's run only: after it, the same workers evaluate it, cache the latents and
    # train the generator (`train/point.py`).
    follow_up: PointFollowUp | None = None

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {self.workload!r}")

    def config(self) -> ExperimentConfig:
        return from_dict(ExperimentConfig, self.experiment)

    def training(self) -> TrainingConfig:
        cfg = self.config()
        return cfg.tokenizer.training if self.workload == "tokenizer" else cfg.generator.training

    @property
    def total_steps(self) -> int:
        return run_length(self.stages)

    def hooks(self) -> DebugHooks:
        return DebugHooks.from_dict(self.debug_hooks)

    def to_dict(self) -> dict:
        return {
            "workload": self.workload,
            "experiment": self.experiment,
            "stages": [
                {"name": s.name, "steps": s.steps, "overrides": s.overrides} for s in self.stages
            ],
            "micro_batch": self.micro_batch,
            "storage_uri": self.storage_uri,
            "run_rel": self.run_rel,
            "inputs": self.inputs,
            "run_ref": self.run_ref,
            "debug_hooks": self.debug_hooks,
            "progress": self.progress,
            "stop_after_step": self.stop_after_step,
            "rank_rows": self.rank_rows,
            "follow_up": self.follow_up,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TrainPlan:
        return cls(**{**data, "stages": tuple(StagePlan(**s) for s in data["stages"])})


def micro_batch_size(training: TrainingConfig, world_size: int) -> int:
    """Per-rank micro-batch: global batch / (accumulation x workers), which must divide."""
    per_step = training.gradient_accumulation_steps * world_size
    if training.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {training.global_batch_size} is not divisible by "
            f"gradient_accumulation_steps x workers = {per_step}"
        )
    return training.global_batch_size // per_step


def steps_for(steps: int | None, epochs: float | None, steps_per_epoch: int) -> int:
    """A length in optimizer steps: `steps`, or `epochs` of the data (at least one step)."""
    if steps is not None:
        return steps
    return max(1, math.ceil(epochs * steps_per_epoch))


def epoch_steps(num_rows: int, training: TrainingConfig, world_size: int) -> int:
    """Optimizer steps per epoch with an equal split and full micro-batches on every rank."""
    micro = micro_batch_size(training, world_size)
    return (num_rows // world_size // micro) // training.gradient_accumulation_steps


def tokenizer_stages(cfg: ExperimentConfig, steps_per_epoch: int) -> tuple[StagePlan, ...]:
    """The staged recipe in order; no stages = one stage with the tokenizer's own values."""
    tok = cfg.tokenizer
    if not tok.stages:
        return (
            StagePlan("main", steps_for(tok.training.steps, tok.training.epochs, steps_per_epoch)),
        )
    plans = []
    for stage in tok.stages:
        overrides = {
            key: value
            for key in ("vf_weight", "cos_margin", "distmat_margin", "disc_start")
            if (value := getattr(stage, key)) is not None
        }
        if stage.train != "all":
            overrides["train"] = stage.train
        plans.append(
            StagePlan(stage.name, steps_for(stage.steps, stage.epochs, steps_per_epoch), overrides)
        )
    return tuple(plans)


def generator_stages(cfg: ExperimentConfig, steps_per_epoch: int) -> tuple[StagePlan, ...]:
    training = cfg.generator.training
    return (StagePlan("main", steps_for(training.steps, training.epochs, steps_per_epoch)),)
