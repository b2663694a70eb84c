"""Improved precision and recall (Kynkäänniemi et al. 2019), ADM's k = 3 manifold estimate.

The computation is torch-fidelity's (k-NN radii including the point itself, a sample is inside a
ball when its distance is <= the radius), which is the rule ADM's ``ManifoldEstimator`` applies;
what is kept here is the choice of reference rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_prc import calculate_precision_recall_part

ADM_NEIGHBOURHOOD = 3


def reference_rows(num_rows: int, count: int, seed: int) -> np.ndarray:
    """`count` row indices drawn without replacement, uniformly over all `num_rows`.

    Reference indexes are stored in class-folder order, so the first 10K rows of ImageNet train
    are about 8 classes; a seeded random subset spans them all. The order is random too, so the
    first `m` of these rows are themselves a uniform random subset of size `m`.
    """
    if num_rows < count:
        raise ValueError(f"the reference holds {num_rows:,} rows, fewer than the {count:,} asked")
    return np.random.default_rng(seed).permutation(num_rows)[:count]


def precision_recall(
    real_features: np.ndarray | torch.Tensor,
    generated_features: np.ndarray | torch.Tensor,
    k: int = ADM_NEIGHBOURHOOD,
    chunk_size: int = 10_000,
) -> tuple[float, float]:
    """(precision, recall): precision is the fraction of generated samples inside some real sample's
    k-NN ball, recall the fraction of real samples inside some generated sample's ball."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float32)
    generated = torch.as_tensor(np.asarray(generated_features), dtype=torch.float32)
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"need more than k={k} samples in each set")
    # torch-fidelity's convention: features_1 = generated, features_2 = real.
    precision, recall = calculate_precision_recall_part(generated, real, k, chunk_size)
    return float(precision), float(recall)
