"""Inception Score from classifier logits."""

from __future__ import annotations

import numpy as np
import torch


def inception_score(logits: np.ndarray | torch.Tensor, num_splits: int = 10) -> tuple[float, float]:
    """Mean and std over `num_splits` of exp(E_x KL(p(y|x) || p(y))).

    Pass torch-fidelity's ``logits_unbiased`` (no fc bias): ADM's evaluator multiplies pool3 by the
    softmax weights only. ADM scores chunks of 5,000 samples, i.e. 10 splits at 50K, the default here.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.ndim != 2 or len(logits) < num_splits:
        raise ValueError(f"need (N >= num_splits, C) logits, got {tuple(logits.shape)}")
    log_probs = torch.log_softmax(logits, dim=1)
    scores = []
    for part in torch.tensor_split(log_probs, num_splits):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
