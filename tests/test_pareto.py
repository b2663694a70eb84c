"""Pareto front on hand-made points, and the frontier outputs."""

from __future__ import annotations

import csv
import io
import math

from orchestrator.evaluation.pareto import (
    FrontierRow,
    frontier_axes,
    frontier_csv,
    frontier_markdown,
    mark_front,
    pareto_mask,
    plot_frontier,
)

MIN_MIN = (True, True)


def test_single_point_is_the_front():
    assert pareto_mask([(1.0, 2.0)], MIN_MIN) == [True]


def test_dominated_points_are_excluded():
    points = [(1.0, 5.0), (2.0, 2.0), (5.0, 1.0), (3.0, 3.0), (2.0, 6.0)]
    assert pareto_mask(points, MIN_MIN) == [True, True, True, False, False]


def test_ties_are_all_kept_and_weak_domination_counts():
    # Two identical points: neither dominates the other.
    assert pareto_mask([(1.0, 1.0), (1.0, 1.0)], MIN_MIN) == [True, True]
    # Equal on one axis, worse on the other: dominated.
    assert pareto_mask([(1.0, 1.0), (1.0, 2.0)], MIN_MIN) == [True, False]


def test_direction_per_axis():
    # PSNR is higher-better: (30 dB, gFID 10) dominates (28 dB, gFID 12).
    assert pareto_mask([(30.0, 10.0), (28.0, 12.0), (26.0, 9.0)], (False, True)) == [
        True,
        False,
        True,
    ]


def test_missing_values_are_never_on_the_front():
    assert pareto_mask([(math.nan, 1.0), (2.0, 2.0)], MIN_MIN) == [False, True]


def rows():
    return [
        FrontierRow(
            "d4 vf=none", {"d": 4, "vf": "none"}, {"rfd_proxy": 9.0, "fd_proxy": 3.0, "psnr": 20.0}
        ),
        FrontierRow(
            "d16 vf=none",
            {"d": 16, "vf": "none"},
            {"rfd_proxy": 2.0, "fd_proxy": 8.0, "psnr": 28.0},
        ),
        FrontierRow(
            "d16 vf=standin",
            {"d": 16, "vf": "standin"},
            {"rfd_proxy": 2.5, "fd_proxy": 5.0, "psnr": 27.0},
        ),
        FrontierRow(
            "d8 vf=none", {"d": 8, "vf": "none"}, {"rfd_proxy": 6.0, "fd_proxy": 6.0, "psnr": 24.0}
        ),
    ]


def test_auto_axes_prefer_real_metrics_then_proxies():
    assert frontier_axes(rows(), "auto", "auto") == ("rfd_proxy", "fd_proxy")
    real = [FrontierRow("a", {}, {"rfid": 1.0, "gfid": 2.0, "rfd_proxy": 1.0, "fd_proxy": 2.0})]
    assert frontier_axes(real, "auto", "auto") == ("rfid", "gfid")
    assert frontier_axes(rows(), "psnr", "auto") == ("psnr", "fd_proxy")


def test_outputs(tmp_path):
    data = rows()
    front = mark_front(data, "rfd_proxy", "fd_proxy")
    assert front == [True, True, True, False]
    table = list(csv.DictReader(io.StringIO(frontier_csv(data, front))))
    assert [r["on_front"] for r in table] == ["True", "True", "True", "False"]
    assert table[2]["vf"] == "standin" and float(table[2]["fd_proxy"]) == 5.0
    md = frontier_markdown(data, front, ["d", "vf", "rfd_proxy", "fd_proxy"])
    assert md.count("\n| *") == 3 and "d8 vf=none" in md
    png = plot_frontier(data, front, "rfd_proxy", "fd_proxy", tmp_path / "frontier.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
