"""Inception Score from classifier logits, over ADM's 5,000-sample splits (via torch-fidelity)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_isc import isc_features_to_metric

# ADM scores consecutive chunks of 5,000 samples: 10 splits at 50K, 2 at 10K.
ADM_SPLIT_SIZE = 5_000


def inception_score_splits(num_samples: int, split_size: int = ADM_SPLIT_SIZE) -> int:
    """floor(N / 5,000) splits, at least one: fewer than 5,000 samples are scored as one split.

    ADM's evaluator also scores a ragged final chunk when N is not a multiple of 5,000; here the N
    samples are cut into equal splits instead (identical to ADM whenever 5,000 divides N).
    """
    return max(1, num_samples // split_size)


def inception_score(
    logits: np.ndarray | torch.Tensor, split_size: int = ADM_SPLIT_SIZE
) -> tuple[float, float]:
    """Mean and std over splits of exp(E_x KL(p(y|x) || p(y))), splits of `split_size` samples.

    Pass torch-fidelity's ``logits_unbiased`` (no fc bias): ADM's evaluator multiplies pool3 by the
    softmax weights only. Computed by torch-fidelity in float64, in sample order (no shuffle, as
    ADM does), so it equals the kept library's IS by construction.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or len(logits) < 2:
        raise ValueError(f"need (N >= 2, C) logits, got {tuple(logits.shape)}")
    result = isc_features_to_metric(
        logits, splits=inception_score_splits(len(logits), split_size), shuffle=False
    )
    return result["inception_score_mean"], result["inception_score_std"]
