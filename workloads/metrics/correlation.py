"""How well a cheap proxy predicts the generation metric across a sweep's points (issue 20).

Pearson (linear) and Spearman (rank) correlation over the points that have both values, each
with a percentile bootstrap interval: resample the points with replacement, recompute, take the
2.5th and 97.5th percentiles (resamples whose values are all equal have no correlation and are
skipped). With a handful of points the interval is wide, and says so better than any rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

MIN_POINTS = 4
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Correlation:
    proxy: str
    target: str
    n: int
    pearson: float
    pearson_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(dx * dx) * np.sum(dy * dy)))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson of the ranks (ties share their average rank)."""
    return pearson(rankdata(x), rankdata(y))


def bootstrap_interval(
    x: np.ndarray, y: np.ndarray, statistic, samples: int, rng: np.random.Generator
) -> tuple[float, float]:
    n = len(x)
    values = []
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        value = statistic(x[pick], y[pick])
        if math.isfinite(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def correlate(
    proxy: str,
    target: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Correlation | None:
    """The correlation of `x` (proxy) with `y` (target) over pairs where both are finite;
    None with fewer than MIN_POINTS such pairs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    return Correlation(
        proxy,
        target,
        len(x),
        pearson(x, y),
        bootstrap_interval(x, y, pearson, samples, rng),
        spearman(x, y),
        bootstrap_interval(x, y, spearman, samples, rng),
    )
