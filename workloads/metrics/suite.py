"""The ADM evaluator's metric set (FID, sFID, IS, precision, recall) from Inception features."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from workloads.metrics.frechet import FeatureStats, frechet_distance
from workloads.metrics.inception_score import inception_score
from workloads.metrics.precision_recall import precision_recall


def inception_generation_metrics(
    generated: Mapping[str, np.ndarray],
    reference: Mapping[str, FeatureStats],
    reference_pool_features: np.ndarray | None = None,
    inception_score_splits: int = 10,
) -> dict[str, float]:
    """Metrics of generated samples against a reference.

    `generated`: ``InceptionFeatures.extract`` output (``pool``, ``logits``, ``spatial``).
    `reference`: statistics by name; ``spatial`` is optional (sFID is skipped without it).
    `reference_pool_features`: raw reference pool3 features; precision/recall need the points
    themselves, not just their statistics (ADM recomputes them from the batch's ``arr_0``).
    """
    metrics = {
        "fid": frechet_distance(reference["pool"], FeatureStats.from_features(generated["pool"])),
        "is": inception_score(generated["logits"], inception_score_splits)[0],
    }
    if "spatial" in reference:
        generated_spatial = FeatureStats.from_features(generated["spatial"])
        metrics["sfid"] = frechet_distance(reference["spatial"], generated_spatial)
    if reference_pool_features is not None:
        precision, recall = precision_recall(reference_pool_features, generated["pool"])
        metrics.update(precision=precision, recall=recall)
    return metrics
