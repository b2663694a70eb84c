"""The frontier: Pareto front of reconstruction vs generation, as a chart, a CSV and a table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workloads.metrics.names import METRICS, axis_label, lower_is_better, parse_metric


def dominates(a: Sequence[float], b: Sequence[float], lower: Sequence[bool]) -> bool:
    """`a` is at least as good as `b` everywhere and strictly better somewhere."""
    better_or_equal = all((x <= y) if lo else (x >= y) for x, y, lo in zip(a, b, lower))
    strictly = any((x < y) if lo else (x > y) for x, y, lo in zip(a, b, lower))
    return better_or_equal and strictly


def pareto_mask(points: Sequence[Sequence[float]], lower: Sequence[bool]) -> list[bool]:
    """True for every non-dominated point. Equal points do not dominate each other, so ties are
    all kept; points with a missing (NaN/inf) coordinate are never on the front."""
    finite = [all(math.isfinite(v) for v in p) for p in points]
    return [
        finite[i]
        and not any(
            finite[j] and dominates(points[j], points[i], lower)
            for j in range(len(points))
            if j != i
        )
        for i in range(len(points))
    ]


@dataclass(frozen=True)
class FrontierRow:
    label: str
    params: dict[str, object]
    metrics: dict[str, float]


def _first_of(bases: Sequence[str], available: set[str]) -> str | None:
    """The first available metric, in `bases` order, whose base name is one of `bases`."""
    for base in bases:
        for name in sorted(available):
            if parse_metric(name)[0] == base:
                return name
    return None


def frontier_axes(rows: Sequence[FrontierRow], x: str, y: str) -> tuple[str, str]:
    """Resolve "auto" axes (the real Inception metrics when present, else the proxies) and base
    names (`fid` -> the `fid_<count>` the rows report); a metric the table lacks is refused."""
    available = set().union(*(r.metrics for r in rows)) if rows else set()

    def pick(axis: str, auto: Sequence[str], fallback: str) -> str:
        if axis == "auto":
            return _first_of(auto, available) or fallback
        if axis in METRICS and METRICS[axis].counted:
            return _first_of([axis], available) or axis
        lower_is_better(axis)  # KeyError for an unknown metric: never a silent guess
        return axis

    return pick(x, ("rfid", "rfd_proxy", "psnr"), "psnr"), pick(y, ("fid", "fd_proxy"), "fd_proxy")


def mark_front(rows: Sequence[FrontierRow], x: str, y: str) -> list[bool]:
    coords = [(r.metrics.get(x, math.nan), r.metrics.get(y, math.nan)) for r in rows]
    return pareto_mask(coords, (lower_is_better(x), lower_is_better(y)))


def _columns(rows: Sequence[FrontierRow]) -> tuple[list[str], list[str]]:
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    metrics = list(dict.fromkeys(k for r in rows for k in r.metrics))
    return params, metrics


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def frontier_csv(rows: Sequence[FrontierRow], front: Sequence[bool]) -> str:
    params, metrics = _columns(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["label", *params, *metrics, "on_front"])
    for row, on in zip(rows, front):
        writer.writerow(
            [
                row.label,
                *(row.params.get(p, "") for p in params),
                *(row.metrics.get(m, "") for m in metrics),
                on,
            ]
        )
    return out.getvalue()


def frontier_markdown(
    rows: Sequence[FrontierRow], front: Sequence[bool], columns: Sequence[str]
) -> str:
    header = ["", "point", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, on in zip(rows, front):
        cells = ["*" if on else "", row.label]
        cells += [_fmt(row.metrics.get(c, row.params.get(c, ""))) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`*` = on the Pareto front.")
    return "\n".join(lines)


def plot_frontier(
    rows: Sequence[FrontierRow], front: Sequence[bool], x: str, y: str, path: Path, title: str
) -> Path:
    import matplotlib.pyplot as plt

    fig = frontier_figure(rows, front, x, y, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def frontier_figure(rows: Sequence[FrontierRow], front: Sequence[bool], x: str, y: str, title: str):
    """Every point coloured by its latent dim and marked by its VF setting (as the paper's
    figures read: filled = VF on, hollow = off), the Pareto front joined, each point labelled
    inside the frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    xs = [r.metrics.get(x, math.nan) for r in rows]
    ys = [r.metrics.get(y, math.nan) for r in rows]
    shown = [i for i in range(len(rows)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    dims = sorted({r.params.get("d") for r in rows}, key=lambda d: (d is None, str(d).zfill(8)))
    palette = plt.get_cmap("viridis")
    # Up to 0.9 of the map: its yellow end is too light to read as a hollow ring on white.
    colour = {d: palette(k / max(1, len(dims) - 1) * 0.9) for k, d in enumerate(dims)}
    for d in dims:
        for vf_on in (False, True):
            idx = [i for i in shown if rows[i].params.get("d") == d and _vf_on(rows[i]) == vf_on]
            if idx:
                ax.scatter(
                    [xs[i] for i in idx],
                    [ys[i] for i in idx],
                    s=55,
                    marker="o",
                    facecolors=colour[d] if vf_on else "none",
                    edgecolors=colour[d],
                    linewidths=1.6,
                    zorder=3,
                )
    on = sorted((i for i in shown if front[i]), key=lambda i: xs[i])
    ax.plot([xs[i] for i in on], [ys[i] for i in on], "-", c="#d1495b", lw=1.2, zorder=2)
    ax.scatter(
        [xs[i] for i in on],
        [ys[i] for i in on],
        s=160,
        facecolors="none",
        edgecolors="#d1495b",
        linewidths=1.0,
        label="Pareto front",
        zorder=2,
    )
    ax.margins(x=0.08, y=0.1)
    # Points a prune left without a generator (search.prune): crosses on the x axis itself
    # (x in data, y in axes coordinates), so no generation value is implied.
    pruned = [
        i for i, r in enumerate(rows) if r.params.get("status") == "pruned" and math.isfinite(xs[i])
    ]
    if pruned:
        # Axes-coordinate artists do not widen the data limits: widen them to every point.
        finite = [v for v in xs if math.isfinite(v)]
        pad = 0.08 * ((max(finite) - min(finite)) or abs(max(finite)) or 1.0)
        ax.set_xlim(min(finite) - pad, max(finite) + pad)
        ax.scatter(
            [xs[i] for i in pruned],
            [0.0] * len(pruned),
            transform=ax.get_xaxis_transform(),
            marker="x",
            c="#33658a",
            s=50,
            clip_on=False,
            label="pruned (no generator)",
        )
    # The legend reads as the paper's: one colour per latent dim, one marker per VF setting.
    dot = {"marker": "o", "linestyle": "", "markersize": 7, "markeredgewidth": 1.6}
    keys = [Line2D([], [], color=colour[d], label=f"d={d}", **dot) for d in dims]
    keys += [
        Line2D([], [], color="0.35", markerfacecolor=fill, label=name, **dot)
        for vf_on, fill, name in ((True, "0.35", "VF on"), (False, "none", "VF off"))
        if any(_vf_on(rows[i]) == vf_on for i in shown)
    ]
    # Beside the axes, not over them: "best" only avoids the points, never their labels.
    ax.legend(
        handles=[*keys, *ax.get_legend_handles_labels()[0]],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
    )
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    # Labels are measured where they will be drawn (layout and limits settled): each goes right
    # of its point where it fits, else left of it (labels past the right edge used to be cut
    # off). Above the point always fits: the y margin is taller than a label.
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    right_edge = ax.get_window_extent(renderer).x1
    for i in [*shown, *pruned]:
        is_pruned = i in pruned
        text = ax.annotate(
            rows[i].label,
            (xs[i], 0.0 if is_pruned else ys[i]),
            xycoords=ax.get_xaxis_transform() if is_pruned else "data",
            textcoords="offset points",
            xytext=(6, 5),
            ha="left",
            fontsize=6 if is_pruned else 7,
            color="#33658a" if is_pruned else "black",
        )
        if text.get_window_extent(renderer).x1 > right_edge:
            text.xyann = (-6, 5)
            text.set_horizontalalignment("right")
    return fig


def _vf_on(row: FrontierRow) -> bool:
    """VF on for this point: `tokenizer.vf.foundation` names a model (a pretrained tokenizer has
    no VF setting: shown as off)."""
    return str(row.params.get("vf", "none")) != "none"
