"""The proxies' correlation report on synthetic metrics with a known correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.evaluation.correlation import correlation_csv, proxy_correlations
from orchestrator.evaluation.pareto import FrontierRow
from workloads.metrics.correlation import correlate, pearson, spearman


def test_known_correlations_and_their_intervals():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    # y = 0.8 x + 0.6 noise has correlation 0.8 exactly in expectation.
    y = 0.8 * x + 0.6 * rng.standard_normal(400)
    result = correlate("ifid_50k", "fid_10k", x, y, samples=300)
    assert result.n == 400
    assert result.pearson == pytest.approx(0.8, abs=0.05)
    low, high = result.pearson_ci
    assert low < result.pearson < high and high - low < 0.15
    # A monotone but non-linear relation: Spearman 1, Pearson less.
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert pearson(x, np.exp(3 * x)) < 0.9
    assert pearson(x, -2 * x + 1) == pytest.approx(-1.0)


def test_few_points_give_wide_intervals_and_three_give_none():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([1.2, 1.9, 3.5, 3.9, 5.2, 5.8])
    result = correlate("lds", "fd_proxy_500", x, y, samples=300)
    assert result.n == 6 and result.spearman == pytest.approx(1.0)
    assert result.pearson_ci[0] < result.pearson
    assert correlate("lds", "fd_proxy_500", x[:3], y[:3]) is None
    # NaN pairs (a point without the proxy) are left out of n.
    assert correlate("lds", "t", np.append(x, math.nan), np.append(y, 1.0), samples=50).n == 6


def test_the_sweep_report_covers_every_proxy_present():
    rows = [
        FrontierRow(f"p{i}", {}, {"rfd_proxy_40": r, "lds": 0.1 * i, "fd_proxy_40": 10.0 - i})
        for i, r in enumerate([3.0, 1.0, 4.0, 1.5, 5.0])
    ]
    report = proxy_correlations(rows, "fd_proxy_40", samples=100)
    assert [c.proxy for c in report] == ["rfd_proxy_40", "lds"]
    assert report[1].pearson == pytest.approx(-1.0)
    csv = correlation_csv(report).splitlines()
    assert csv[0].startswith("proxy,target,n,pearson") and len(csv) == 3
    # Fewer than four points with the target: no report.
    assert proxy_correlations(rows[:3], "fd_proxy_40") == []
