"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii in feature space."""

from __future__ import annotations

import numpy as np
import torch


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point (self sits at distance 0)."""
    radii = []
    for rows in features.split(chunk_size):
        # Keep a running k+1 smallest per row so memory stays (chunk x chunk) however large N is.
        nearest = torch.empty(len(rows), 0, device=rows.device)
        for columns in features.split(chunk_size):
            candidates = torch.cat([nearest, torch.cdist(rows, columns)], dim=1)
            nearest = candidates.topk(k + 1, dim=1, largest=False).values
        radii.append(nearest[:, k])
    return torch.cat(radii)


def _fraction_inside_any_ball(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk_size: int
) -> float:
    inside = []
    for rows in queries.split(chunk_size):
        # Column chunks keep the (rows x centres) block bounded for 10k x 10k and beyond.
        hit = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        for start in range(0, len(centres), chunk_size):
            block = torch.cdist(rows, centres[start : start + chunk_size])
            hit |= (block <= radii[start : start + chunk_size]).any(dim=1)
        inside.append(hit)
    return torch.cat(inside).float().mean().item()


def precision_recall(
    real_features: np.ndarray | torch.Tensor,
    generated_features: np.ndarray | torch.Tensor,
    k: int = 3,
    chunk_size: int = 1024,
) -> tuple[float, float]:
    """(precision, recall): precision is the fraction of generated samples inside some real sample's
    k-NN ball, recall the fraction of real samples inside some generated sample's ball (k = 3 as ADM).
    """
    real = torch.as_tensor(real_features, dtype=torch.float32)
    generated = torch.as_tensor(generated_features, dtype=torch.float32)
    if min(len(real), len(generated)) <= k or chunk_size <= k:
        raise ValueError(f"need more than k={k} samples in each set and chunk_size > k")
    real_radii = _kth_neighbour_radii(real, k, chunk_size)
    generated_radii = _kth_neighbour_radii(generated, k, chunk_size)
    precision = _fraction_inside_any_ball(generated, real, real_radii, chunk_size)
    recall = _fraction_inside_any_ball(real, generated, generated_radii, chunk_size)
    return precision, recall
