"""Honest metric names: a number is called FID only when a real Inception computed it."""

from __future__ import annotations

from orchestrator.config import ExperimentConfig

FID_50K = 50_000


def sample_count_suffix(num_samples: int) -> str:
    """`50K`, `10K`, `2K` (rounded down to thousands) or the plain count below 1000."""
    return f"{num_samples // 1000}K" if num_samples >= 1000 else str(num_samples)


def uses_inception(cfg: ExperimentConfig) -> bool:
    return cfg.evaluation.inception_weights is not None or cfg.dataset.source == "folder"


def generation_metric_label(cfg: ExperimentConfig) -> str:
    """`FID-50K`, `FID-10K`, ... with Inception; `FD-proxy-500` on the embedded default."""
    suffix = sample_count_suffix(cfg.evaluation.num_samples)
    return f"FID-{suffix}" if uses_inception(cfg) else f"FD-proxy-{suffix}"
