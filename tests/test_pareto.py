"""Pareto front on hand-made points, and the frontier outputs."""

from __future__ import annotations

import csv
import io
import math

from orchestrator.evaluation.pareto import (
    FrontierRow,
    frontier_axes,
    frontier_csv,
    frontier_figure,
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
            "d4 vf=none",
            {"d": 4, "vf": "none"},
            {"rfd_proxy_500": 9.0, "fd_proxy_500": 3.0, "psnr": 20.0},
        ),
        FrontierRow(
            "d16 vf=none",
            {"d": 16, "vf": "none"},
            {"rfd_proxy_500": 2.0, "fd_proxy_500": 8.0, "psnr": 28.0},
        ),
        FrontierRow(
            "d16 vf=standin",
            {"d": 16, "vf": "standin"},
            {"rfd_proxy_500": 2.5, "fd_proxy_500": 5.0, "psnr": 27.0},
        ),
        FrontierRow(
            "d8 vf=none",
            {"d": 8, "vf": "none"},
            {"rfd_proxy_500": 6.0, "fd_proxy_500": 6.0, "psnr": 24.0},
        ),
    ]


def test_auto_axes_prefer_real_metrics_then_proxies():
    assert frontier_axes(rows(), "auto", "auto") == ("rfd_proxy_500", "fd_proxy_500")
    real = [
        FrontierRow(
            "a", {}, {"rfid_50k": 1.0, "fid_10k": 2.0, "rfd_proxy_500": 1.0, "fd_proxy_500": 2.0}
        )
    ]
    assert frontier_axes(real, "auto", "auto") == ("rfid_50k", "fid_10k")
    assert frontier_axes(rows(), "psnr", "auto") == ("psnr", "fd_proxy_500")
    # A base name resolves to the counted name the rows report.
    assert frontier_axes(real, "rfid", "fid") == ("rfid_50k", "fid_10k")


def test_direction_comes_from_the_table_and_unknown_metrics_are_refused():
    import pytest

    data = [
        FrontierRow("a", {}, {"psnr": 30.0, "precision_proxy_500": 0.9}),
        FrontierRow("b", {}, {"psnr": 25.0, "precision_proxy_500": 0.5}),
        FrontierRow("c", {}, {"psnr": 20.0, "precision_proxy_500": 0.95}),
    ]
    # Both higher-is-better: `a` and `c` trade off, `b` is dominated by `a`.
    assert mark_front(data, "psnr", "precision_proxy_500") == [True, False, True]
    with pytest.raises(KeyError, match="gfid"):
        frontier_axes(data, "psnr", "gfid")
    with pytest.raises(KeyError, match="sharpness"):
        mark_front(data, "psnr", "sharpness")


def test_outputs(tmp_path):
    data = rows()
    front = mark_front(data, "rfd_proxy_500", "fd_proxy_500")
    assert front == [True, True, True, False]
    table = list(csv.DictReader(io.StringIO(frontier_csv(data, front))))
    assert [r["on_front"] for r in table] == ["True", "True", "True", "False"]
    assert table[2]["vf"] == "standin" and float(table[2]["fd_proxy_500"]) == 5.0
    md = frontier_markdown(data, front, ["d", "vf", "rfd_proxy_500", "fd_proxy_500"])
    assert md.count("\n| *") == 3 and "d8 vf=none" in md
    png = plot_frontier(
        data, front, "rfd_proxy_500", "fd_proxy_500", tmp_path / "frontier.png", "t"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_reads_like_the_papers_figures():
    """Colour by latent dim, filled = VF on, hollow = off; every label inside the axes (they
    were cut at the right edge), a pruned point's too."""
    import matplotlib.pyplot as plt

    data = [
        *rows(),
        # The rightmost and topmost point, with a long label: it turns left of the point.
        FrontierRow(
            "rae d16 vf=dinov2 DiT^DH=2x2048 init=a-long-checkpoint-name.pt",
            {"d": 16, "vf": "dinov2"},
            {"rfd_proxy_500": 9.5, "fd_proxy_500": 9.0},
        ),
        FrontierRow(
            "detok d8 vf=none", {"d": 8, "vf": "none", "status": "pruned"}, {"rfd_proxy_500": 7.0}
        ),
    ]
    front = mark_front(data, "rfd_proxy_500", "fd_proxy_500")
    fig = frontier_figure(data, front, "rfd_proxy_500", "fd_proxy_500", "t")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "d=4",
        "d=8",
        "d=16",
        "VF on",
        "VF off",
        "Pareto front",
        "pruned (no generator)",
    ]

    # Each drawn point: ring in its d's colour, filled with it iff VF is on.
    drawn = {}
    for c in ax.collections:
        for xy in c.get_offsets():
            drawn.setdefault(tuple(xy), []).append(c)
    colour_of = {}
    for r in data:
        if "fd_proxy_500" not in r.metrics:
            continue
        (point,) = [
            c
            for c in drawn[(r.metrics["rfd_proxy_500"], r.metrics["fd_proxy_500"])]
            if c.get_zorder() == 3  # the front's red rings lie beneath (zorder 2)
        ]
        (edge,) = point.get_edgecolor()
        assert colour_of.setdefault(r.params["d"], tuple(edge)) == tuple(edge), r.label
        face = point.get_facecolor()
        if r.params["vf"] == "none":
            assert len(face) == 0, r.label
        else:
            assert [tuple(f) for f in face] == [tuple(edge)], r.label
    assert len(set(colour_of.values())) == len(colour_of) == 3

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    labels = {t.get_text(): t for t in ax.texts}
    assert sorted(labels) == sorted(r.label for r in data)
    for text in labels.values():
        box = text.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, text.get_text()
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1, text.get_text()
    assert labels[data[4].label].get_horizontalalignment() == "right"
    assert labels["d16 vf=none"].get_horizontalalignment() == "left"
    plt.close(fig)
