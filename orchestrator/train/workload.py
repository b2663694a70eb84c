"""What the generic train loop asks of a workload adapter (tokenizer.py, generator.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from orchestrator.train.guard import SkippableStepMixin
from orchestrator.train.state import Extra


@dataclass
class ModelBundle:
    """A freshly built model and its client optimizer (not yet wrapped by DeepSpeed).

    `zero3_leaf`: under ZeRO-3, gather the model's parameters whole for each forward and each
    backward instead of submodule by submodule (for objectives that run extra backward passes
    inside the forward, see tokenizer.py).
    """

    model: nn.Module
    optimizer: SkippableStepMixin
    zero3_leaf: bool = False


def load_full_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Load a full state dict; frozen parameters may be absent and keep their built values.

    DeepSpeed's consolidated checkpoints (`zero_to_fp32`) hold what the optimizer trains plus
    the buffers, not frozen parameters such as LightningDiT's fixed sin-cos `pos_embed`, which
    the constructor computes anyway. Values may be lazy (anything with `.shape` and
    `.contiguous()`, as `state.consolidated_weights` returns): each is materialised and copied
    in place one at a time, so loading never holds a second whole copy of the model.
    """
    own = model.state_dict()  # tensors sharing storage with the parameters and buffers
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    missing = [key for key in own if key not in weights and key not in frozen]
    unexpected = [key for key in weights if key not in own]
    misshapen = [
        key for key in own if key in weights and tuple(weights[key].shape) != own[key].shape
    ]
    if missing or unexpected or misshapen:
        raise KeyError(
            f"weights do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shape {misshapen[:5]}"
        )
    with torch.no_grad():
        for key, target in own.items():
            if key in weights:
                target.copy_(weights[key].contiguous())


class Workload(Protocol):
    """A workload adapter; the loop owns DeepSpeed, data, checkpoints, the guard and reporting."""

    name: str
    # Random streams of this rank besides the global ones (saved in every checkpoint).
    generators: dict[str, torch.Generator]

    def build(self, stage_index: int, weights: dict[str, torch.Tensor] | None) -> ModelBundle:
        """Model + optimizer of a stage; `weights` (a full state dict) initialise the model."""
        ...

    def loss(
        self,
        engine,
        batch: dict[str, np.ndarray],
        stage_index: int,
        stage_step: int,
        global_step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to back-propagate, detached scalar terms) of one micro-batch."""
        ...

    def after_update(self, engine) -> None:
        """Called on every rank after each applied update (collective under ZeRO-3)."""
        ...

    def start(self, engine) -> None:
        """Called on every rank once per engine, after any restore (collective under ZeRO-3)."""
        ...

    def extras(self) -> dict[str, Extra]:
        """State outside the engine to checkpoint (rank 0)."""
        ...

    def load_extras(self, directory: Path) -> None:
        """Restore `extras()` from a checkpoint directory (every rank calls it)."""
        ...

    def export(
        self, weights: dict[str, torch.Tensor]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """(file name -> tensors, summary fields) of the final export from full weights (rank 0)."""
        ...
