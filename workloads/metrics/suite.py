"""The ADM evaluator's metric set (FID, sFID, IS, precision, recall), named with sample counts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workloads.metrics.frechet import FeatureStats, frechet_distance
from workloads.metrics.inception_score import inception_score
from workloads.metrics.names import metric_name, precision_recall_count
from workloads.metrics.precision_recall import precision_recall


def inception_generation_metrics(
    generated: Mapping[str, np.ndarray],
    reference: Mapping[str, FeatureStats],
    reference_pool_features: np.ndarray,
) -> dict[str, float]:
    """``fid_<N>``, ``sfid_<N>``, ``is_<N>``, ``precision_<P>``, ``recall_<P>`` of N samples.

    `generated`: ``InceptionFeatures.extract`` output (``pool``, ``logits``, ``spatial``).
    `reference`: statistics by name; ``spatial`` is optional (sFID is skipped without it).
    `reference_pool_features`: pool3 features of a random reference subset, at least P rows
    (P = min(N, 10K)); its first P rows are compared with the first P samples.
    """
    count = len(generated["pool"])
    metrics = {
        metric_name("fid", count): frechet_distance(
            reference["pool"], FeatureStats.from_features(generated["pool"])
        ),
        metric_name("is", count): inception_score(generated["logits"])[0],
    }
    if "spatial" in reference:
        generated_spatial = FeatureStats.from_features(generated["spatial"])
        metrics[metric_name("sfid", count)] = frechet_distance(
            reference["spatial"], generated_spatial
        )
    pr_count = precision_recall_count(count)
    if len(reference_pool_features) < pr_count:
        raise ValueError(
            f"precision/recall needs {pr_count:,} reference images, got {len(reference_pool_features):,}"
        )
    precision, recall = precision_recall(
        reference_pool_features[:pr_count], generated["pool"][:pr_count]
    )
    metrics[metric_name("precision", pr_count)] = precision
    metrics[metric_name("recall", pr_count)] = recall
    return metrics
