"""The frontier: Pareto front of reconstruction vs generation, as a chart, a CSV and a table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Direction of every metric the frontier may use: True = lower is better.
LOWER_IS_BETTER = {
    "rfid": True,
    "rfd_proxy": True,
    "psnr": False,
    "ssim": False,
    "lpips": True,
    "gfid": True,
    "sfid": True,
    "fd_proxy": True,
    "inception_score": False,
    "class_consistency": False,
    "precision": False,
    "recall": False,
    "density_cv": True,
    "gini": True,
    "norm_entropy": False,
}

PRETTY = {
    "rfid": "rFID",
    "rfd_proxy": "rFD-proxy",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "gfid": "gFID",
    "fd_proxy": "FD-proxy",
    "class_consistency": "class consistency",
}


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


def frontier_axes(rows: Sequence[FrontierRow], x: str, y: str) -> tuple[str, str]:
    """Resolve "auto" axes to the real Inception metrics when present, else the proxies."""
    available = set().union(*(r.metrics for r in rows)) if rows else set()
    if x == "auto":
        x = next((m for m in ("rfid", "rfd_proxy", "psnr") if m in available), "psnr")
    if y == "auto":
        y = next((m for m in ("gfid", "fd_proxy") if m in available), "fd_proxy")
    return x, y


def mark_front(rows: Sequence[FrontierRow], x: str, y: str) -> list[bool]:
    coords = [(r.metrics.get(x, math.nan), r.metrics.get(y, math.nan)) for r in rows]
    return pareto_mask(coords, (LOWER_IS_BETTER.get(x, True), LOWER_IS_BETTER.get(y, True)))


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
    """Scatter of every point, the front joined and highlighted, each point labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    xs = [r.metrics.get(x, math.nan) for r in rows]
    ys = [r.metrics.get(y, math.nan) for r in rows]
    off = [i for i, on in enumerate(front) if not on]
    on = sorted((i for i, f in enumerate(front) if f), key=lambda i: xs[i])
    ax.scatter([xs[i] for i in off], [ys[i] for i in off], c="#9aa5b1", s=40, label="dominated")
    ax.plot([xs[i] for i in on], [ys[i] for i in on], "-o", c="#d1495b", ms=8, label="Pareto front")
    for i, row in enumerate(rows):
        if math.isfinite(xs[i]) and math.isfinite(ys[i]):
            ax.annotate(
                row.label, (xs[i], ys[i]), textcoords="offset points", xytext=(5, 4), fontsize=7
            )
    ax.set_xlabel(
        f"{PRETTY.get(x, x)} ({'lower' if LOWER_IS_BETTER.get(x, True) else 'higher'} is better)"
    )
    ax.set_ylabel(
        f"{PRETTY.get(y, y)} ({'lower' if LOWER_IS_BETTER.get(y, True) else 'higher'} is better)"
    )
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
