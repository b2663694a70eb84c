"""Image conversions shared by the evaluators, and batched feature extraction."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8, or float in [-1, 1], -> uint8 with the reference's quantisation.

    The reference writes samples and reconstructions as ``clamp(127.5 * x + 128, 0, 255)`` cast to
    uint8 (truncation, not rounding); the evaluators then read those PNGs, so we quantise the same way.
    """
    if images.dtype == torch.uint8:
        return images
    return torch.clamp(127.5 * images.float() + 128.0, 0.0, 255.0).to(torch.uint8)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float in [-1, 1] -> float32 in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


def as_nchw_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Accept (N, H, W, 3) numpy arrays (PIL / ADM ``arr_0`` layout) or (N, 3, H, W) tensors."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
        if images.ndim == 4 and images.shape[-1] == 3:
            # Contiguous NCHW: a permuted view would be channels-last, which slows small convs.
            images = images.permute(0, 3, 1, 2).contiguous()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) or (N, H, W, 3) images, got {tuple(images.shape)}")
    return images


@torch.no_grad()
def features_in_batches(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Run `feature_fn` over `images` in batches; returns (N, D) float64 features."""
    images = as_nchw_tensor(images)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        chunks.append(feature_fn(batch).reshape(len(batch), -1).double().cpu())
    return torch.cat(chunks).numpy()
