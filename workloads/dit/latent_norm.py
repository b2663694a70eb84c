"""Latent normalisation (reference `latents_stats.pt` + `latent_multiplier`).

Training sees z_in = (z - mean) / std * multiplier with statistics over (N, H, W) per channel,
or over N per (C, H, W) position (RAE's `stat.pt`); sampling inverts it before decoding. The release uses multiplier 1.0 (0.18215 is the SD-VAE/DiT
convention used with `latent_norm: false`). Forgetting one side of the pair wrecks FID.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


def _statistic(values: Any, name: str) -> torch.Tensor:
    """(C,) per channel or (C, H, W) per position; the reference's (1, C, 1, 1) is per channel."""
    tensor = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[1:] == (1, 1):
        tensor = tensor.reshape(-1)
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty")
    return tensor


@dataclass
class LatentStats:
    """`mean` and `std` of shape (C,) (per channel) or (C, H, W) (per position), and the
    scalar `multiplier`."""

    mean: torch.Tensor
    std: torch.Tensor
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        self.mean = _statistic(self.mean, "mean")
        self.std = _statistic(self.std, "std")
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean {tuple(self.mean.shape)} and std {tuple(self.std.shape)} differ"
            )
        if not bool((self.std > 0).all()):
            raise ValueError("every std must be positive")
        if self.multiplier <= 0:
            raise ValueError(f"multiplier must be positive, got {self.multiplier}")

    @property
    def num_channels(self) -> int:
        return self.mean.shape[0]

    @property
    def per_position(self) -> bool:
        return self.mean.ndim == 3

    def _broadcast(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = tuple(self.mean.shape) if self.per_position else (self.num_channels,)
        if z.ndim != 4 or tuple(z.shape[1 : 1 + len(expected)]) != expected:
            where = "x".join(map(str, expected)) if self.per_position else f"{expected[0]}, H, W"
            raise ValueError(f"expected latents (N, {where}), got {tuple(z.shape)}")
        shape = (1, *self.mean.shape) if self.per_position else (1, self.num_channels, 1, 1)
        mean = self.mean.to(device=z.device, dtype=z.dtype).view(shape)
        std = self.std.to(device=z.device, dtype=z.dtype).view(shape)
        return mean, std

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Tokenizer latents -> model space: (z - mean) / std * multiplier."""
        mean, std = self._broadcast(z)
        return (z - mean) / std * self.multiplier

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> tokenizer latents: z * std / multiplier + mean (reference inference.py)."""
        mean, std = self._broadcast(z)
        return z * std / self.multiplier + mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "multiplier": self.multiplier}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatentStats:
        """Inverse of `to_dict`; also reads the reference `latents_stats.pt` dict ({mean, std})."""
        return cls(data["mean"], data["std"], float(data.get("multiplier", 1.0)))

    @classmethod
    def from_samples(cls, batches: Iterable[torch.Tensor], multiplier: float = 1.0) -> LatentStats:
        """Mean and unbiased std per channel over (N, H, W) of latent batches (N, C, H, W).

        Batches are merged with Chan's parallel update in float64, so the result does not depend
        on how the samples are split.
        """
        count = 0
        mean = m2 = None
        for z in batches:
            if z.ndim != 4:
                raise ValueError(f"expected latent batches (N, C, H, W), got {tuple(z.shape)}")
            flat = z.detach().to(torch.float64).transpose(0, 1).reshape(z.shape[1], -1)
            n_b = flat.shape[1]
            mean_b = flat.mean(dim=1)
            m2_b = (flat - mean_b[:, None]).pow(2).sum(dim=1)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            if mean_b.shape != mean.shape:
                raise ValueError("latent batches have different channel counts")
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta.pow(2) * (count * n_b / total)
            count = total
        if mean is None or count < 2:
            raise ValueError("need at least two latent values per channel")
        return cls(mean.float(), (m2 / (count - 1)).sqrt().float(), multiplier)
