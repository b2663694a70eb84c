"""Exponential moving average of model weights, kept as a plain float32 tensor dict.

The EMA does not hold a model copy: it is initialised from and updated with `(name, tensor)` pairs,
so a sharded driver can feed full parameters as it gathers them, e.g. under DeepSpeed ZeRO-3::

    def gathered(engine):
        for name, param in engine.module.named_parameters():
            with deepspeed.zero.GatheredParameters([param]):
                yield name, param        # consumed before the generator resumes

    ema.update(gathered(engine))

Reference recipe: decay 0.9999 every step from the first, no warm-up, initialised as a copy of the
model (DiT `update_ema(ema, model, decay=0)`), over `named_parameters()` (the frozen `pos_embed`
included; buffers are not averaged).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NamedTensors = Iterable[tuple[str, torch.Tensor]]


class EMA:
    """Float32 shadow weights: shadow <- decay * shadow + (1 - decay) * current."""

    def __init__(
        self, named_tensors: NamedTensors, decay: float = 0.9999, device: torch.device | None = None
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow: OrderedDict[str, torch.Tensor] = OrderedDict(
            (name, tensor.detach().to(device=device, dtype=torch.float32, copy=True))
            for name, tensor in named_tensors
        )
        if not self.shadow:
            raise ValueError("EMA needs at least one tensor")

    @classmethod
    def from_model(cls, model: nn.Module, decay: float = 0.9999) -> EMA:
        """Copy-initialise from a bare (unsharded) model's named parameters."""
        return cls(model.named_parameters(), decay=decay)

    @torch.no_grad()
    def update(self, named_tensors: NamedTensors) -> None:
        """One EMA step; every tracked name must appear exactly once, with its full shape."""
        seen: set[str] = set()
        for name, tensor in named_tensors:
            if name not in self.shadow:
                raise KeyError(f"EMA does not track {name!r}")
            if name in seen:
                raise KeyError(f"{name!r} was passed twice in one EMA update")
            average = self.shadow[name]
            if tensor.shape != average.shape:
                raise ValueError(
                    f"{name}: got shape {tuple(tensor.shape)}, EMA holds {tuple(average.shape)} "
                    "(a ZeRO-3 partition that was not gathered?)"
                )
            average.mul_(self.decay).add_(tensor.detach().to(average), alpha=1.0 - self.decay)
            seen.add(name)
        if len(seen) != len(self.shadow):
            missing = [name for name in self.shadow if name not in seen]
            raise KeyError(f"EMA update is missing {len(missing)} tensors, e.g. {missing[:5]}")
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; names and shapes must match the tracked tensors."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise KeyError(
                f"EMA state names differ: missing {sorted(set(self.shadow) - set(shadow))[:5]}, "
                f"unexpected {sorted(set(shadow) - set(self.shadow))[:5]}"
            )
        for name, average in self.shadow.items():
            average.copy_(shadow[name])
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averages into a bare model's parameters of the same names (cast to their dtype)."""
        params = dict(model.named_parameters())
        missing = [name for name in self.shadow if name not in params]
        if missing:
            raise KeyError(f"model has no parameters named {missing[:5]}")
        for name, average in self.shadow.items():
            params[name].copy_(average)

    def model_state_dict(self, model: nn.Module) -> OrderedDict[str, torch.Tensor]:
        """The model's full state dict with averaged values where tracked.

        This is what the reference stores as `checkpoint["ema"]` (buffers such as the RoPE tables
        come from `model`), so `load_lightningdit_checkpoint(..., entry="ema")` accepts it.
        """
        state = model.state_dict()
        return OrderedDict(
            (key, self.shadow[key].to(value.dtype).cpu() if key in self.shadow else value.cpu())
            for key, value in state.items()
        )
