"""Fréchet distance between Gaussian fits of two feature sets (FID, sFID, rFID, FD_DINOv2, FD-proxy)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg

from workloads.metrics.images import features_in_batches


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set: all a Fréchet distance needs."""

    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
        # ddof=1 (np.cov's default), as ADM's evaluator and pytorch-fid use.
        return cls(mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False))


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), computed as ADM and pytorch-fid do."""
    if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
        raise ValueError(f"feature dims differ: {a.mu.shape} vs {b.mu.shape}")
    diff = a.mu - b.mu
    covmean = linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dimensions): offset both diagonals and retry.
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset))
    if np.iscomplexobj(covmean):
        # Round-off makes sqrtm complex for nearly singular inputs; a large imaginary part is a bug.
        largest_imag = np.max(np.abs(np.diagonal(covmean).imag))
        if largest_imag > 1e-3:
            raise ValueError(f"matrix square root has imaginary component {largest_imag:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * np.trace(covmean))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between two raw feature sets (N, D); rFID is this on originals vs reconstructions."""
    return frechet_distance(
        FeatureStats.from_features(features_a), FeatureStats.from_features(features_b)
    )


def foundation_fd(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    real_images: np.ndarray | torch.Tensor,
    generated_images: np.ndarray | torch.Tensor,
    batch_size: int = 100,
) -> float:
    """FD in a foundation model's feature space (FD_DINOv2 à la EDM2); `feature_fn` maps a batch to (B, D).

    The caller owns the model and its preprocessing (resize, normalisation, which token/pooling).
    """
    real = features_in_batches(feature_fn, real_images, batch_size)
    generated = features_in_batches(feature_fn, generated_images, batch_size)
    return fid_from_features(real, generated)
