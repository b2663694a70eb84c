"""Tokenizer metrics as the reference's ``evaluate_tokenizer.py`` computes them.

All functions return per-image values so callers can average over a whole split (the reference
averages batch means of equal-sized batches, which is the same thing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workloads.metrics.frechet import fid_from_features
from workloads.metrics.images import to_uint8, to_unit_range


def psnr(originals: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image 20 log10(255 / sqrt(MSE)) on uint8-quantised images; inf where they are identical.

    Quantising first (``clamp(127.5 x + 128, 0, 255)``) is the protocol: the reference saves both
    images as PNGs and measures those.
    """
    difference = to_uint8(originals).double() - to_uint8(reconstructions).double()
    mse = difference.pow(2).flatten(1).mean(dim=1)
    return 20.0 * torch.log10(255.0 / mse.sqrt())


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype) -> torch.Tensor:
    offsets = torch.arange(size, dtype=dtype) - (size - 1) / 2
    profile = torch.exp(-0.5 * (offsets / sigma) ** 2)
    profile = profile / profile.sum()
    return torch.outer(profile, profile).expand(channels, 1, size, size).contiguous()


def ssim(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: tuple[float, float] = (-1.0, 1.0),
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-image SSIM, matching torchmetrics' ``StructuralSimilarityIndexMeasure(data_range=(-1, 1))``.

    As torchmetrics 1.x does, the image is reflect-padded by half a window and the SSIM map is
    averaged over every pixel, borders included (older 0.x releases cropped the border instead).
    """
    low, high = data_range
    # The reference measures float images in [-1, 1]; torchmetrics clamps to a tuple data_range.
    x = to_unit_range(originals).double().clamp(low, high)
    y = to_unit_range(reconstructions).double().clamp(low, high)
    c1, c2 = (k1 * (high - low)) ** 2, (k2 * (high - low)) ** 2
    window = _gaussian_window(window_size, sigma, x.shape[1], x.dtype)
    pad = window_size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    mu_x, mu_y, xx, yy, xy = F.conv2d(stacked, window, groups=x.shape[1]).split(len(x))
    var_x = (xx - mu_x**2).clamp(min=0.0)
    var_y = (yy - mu_y**2).clamp(min=0.0)
    cov_xy = xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return (luminance * structure).flatten(1).mean(dim=1)


@torch.no_grad()
def lpips_distance(
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
) -> torch.Tensor:
    """Per-image LPIPS from the tokenizer's own LPIPS module (``lpips(x, y) -> (B, 1, 1, 1)``).

    The module expects [-1, 1] floats, as the reference feeds it.
    """
    distance = lpips(to_unit_range(originals), to_unit_range(reconstructions))
    return distance.reshape(len(originals))


def rfid(original_features: np.ndarray, reconstruction_features: np.ndarray) -> float:
    """rFID: FID between the features of originals and of their reconstructions."""
    return fid_from_features(original_features, reconstruction_features)
