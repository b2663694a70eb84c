"""Rectified-flow training objective of LightningDiT (SiT-style `transport`, Linear path, velocity).

Time convention (reference `transport/path.py::ICPlan`): x_t = t * x1 + (1 - t) * x0 with x0 the
Gaussian noise and x1 the data latent, so **t = 0 is noise and t = 1 is data**. The model regresses
the velocity u = x1 - x0. The loss is MSE plus a per-token cosine "velocity direction" loss over
channels (FasterDiT), weighted 1:1 in the release.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

TIME_SAMPLINGS = ("logit_normal", "uniform")


def flow_path(
    x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point x_t on the straight noise->data path and its velocity target x1 - x0."""
    t_b = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
    return t_b * x1 + (1 - t_b) * x0, x1 - x0


@dataclass
class RectifiedFlowObjective:
    """Loss of one training step; `time_sampling` is "logit_normal" (released) or "uniform".

    The release switches logit-normal to uniform late in the 800-epoch run (paper §5.4).
    """

    time_sampling: str = "logit_normal"
    mse_weight: float = 1.0
    cos_weight: float = 1.0
    # RAE's time shift s (None = none): t -> t / (s + (1 - s) t) on the drawn t, i.e. RAE's
    # s t' / (1 + (s - 1) t') on its reversed time t' = 1 - t (stage2/transport/transport.py).
    time_shift: float | None = None

    def __post_init__(self) -> None:
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(
                f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}"
            )
        if self.mse_weight < 0 or self.cos_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if self.time_shift is not None and not self.time_shift > 0:
            raise ValueError(f"time_shift must be > 0, got {self.time_shift}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RectifiedFlowObjective:
        return cls(**data)

    def sample_time(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One float32 t in (0, 1) per sample."""
        rng_device = generator.device if generator is not None else device
        if self.time_sampling == "logit_normal":
            # t = sigmoid(n), n ~ N(0, 1): more samples at mid times (SD3 logit-normal(0, 1)).
            t = torch.sigmoid(torch.randn(batch, generator=generator, device=rng_device))
        else:
            t = torch.rand(batch, generator=generator, device=rng_device)
        if self.time_shift is not None:
            t = t / (self.time_shift + (1 - self.time_shift) * t)
        return t.to(device)

    def __call__(
        self,
        model: torch.nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Scalar terms {"loss", "mse", "cos"} for data latents x1 (B, C, H, W) and labels y.

        Label dropout for CFG happens inside the model when it is in train mode. The noise is drawn
        before t, as the reference does; pass `generator` to make both reproducible (it may live on
        another device than x1, then the draws are moved).
        """
        rng_device = generator.device if generator is not None else x1.device
        x0 = torch.randn(x1.shape, generator=generator, device=rng_device, dtype=x1.dtype)
        x0 = x0.to(x1.device)
        t = self.sample_time(x1.shape[0], x1.device, generator)
        x_t, target = flow_path(x0, x1, t)
        pred = model(x_t, t, y).float()
        target = target.float()
        # Both terms are means over all elements / tokens, i.e. mean_flat per sample then the
        # batch mean, since every sample has the same size.
        mse = (pred - target).pow(2).mean()
        # Direction loss per spatial token: cosine over the channel dimension.
        cos = (1 - F.cosine_similarity(pred, target, dim=1)).mean()
        loss = self.mse_weight * mse + self.cos_weight * cos
        return {"loss": loss, "mse": mse.detach(), "cos": cos.detach()}
