"""Honest metric names: a number is called FID only when a real Inception computed it."""

from __future__ import annotations

from orchestrator.config import ExperimentConfig


def uses_inception(cfg: ExperimentConfig) -> bool:
    return cfg.evaluation.inception_weights is not None


def reports_lpips(cfg: ExperimentConfig) -> bool:
    """LPIPS is a metric only with real weights: `none` turns it off and `random_init` (tests)
    trains the perceptual term but is no perceptual distance."""
    return cfg.tokenizer.loss.lpips_weights not in ("none", "random_init")


def generation_metric_label(cfg: ExperimentConfig) -> str:
    """`FID-50K`, `FID-10K`, ... with Inception; `FD-proxy-500` on the embedded default."""
    from workloads.metrics.eval_spec import metric_label

    metric = "fid" if uses_inception(cfg) else "fd_proxy"
    return metric_label(metric, cfg.evaluation.num_samples)


def reported_metrics(cfg: ExperimentConfig) -> frozenset[str]:
    """Final metrics every finished point of `cfg` reports: what an Optuna objective may name."""
    if uses_inception(cfg):
        names = {"rfid", "gfid", "inception_score"}
    else:
        names = {"rfd_proxy", "fd_proxy", "class_consistency", "precision_proxy", "recall_proxy"}
    names |= {"psnr", "ssim"}
    if reports_lpips(cfg):
        names.add("lpips")
    return frozenset(names)
