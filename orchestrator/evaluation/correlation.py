"""The proxies' predictive power, measured on every sweep: Pearson and Spearman of each gFID
proxy (and of the reconstruction metric, the baseline the literature finds uninformative) with
the final generation metric, over the points that have both; a scatter plot per proxy."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orchestrator.evaluation.pareto import FrontierRow
from workloads.metrics.correlation import BOOTSTRAP_SAMPLES, MIN_POINTS, Correlation, correlate
from workloads.metrics.names import METRICS, axis_label, display_label, parse_metric

# Tokenizer-side numbers whose correlation with the generation metric is reported, in this
# order: the reconstruction baselines, then the proxies (workloads/metrics/latent_proxies.py,
# uniformity.py).
PROXY_BASES = (
    "rfid",
    "rfd_proxy",
    "ifid",
    "ifd_proxy",
    "lnc",
    "lds",
    "density_cv",
    "gini",
    "norm_entropy",
    "fd_first_round",
)
# Below this many points a correlation is reported with a plain warning.
TRUSTED_POINTS = 10


def proxy_names(rows: Sequence[FrontierRow]) -> list[str]:
    present = {m for r in rows for m in r.metrics}
    return sorted(
        (m for m in present if parse_metric(m)[0] in PROXY_BASES),
        key=lambda m: PROXY_BASES.index(parse_metric(m)[0]),
    )


def proxy_correlations(
    rows: Sequence[FrontierRow], target: str, *, samples: int = BOOTSTRAP_SAMPLES
) -> list[Correlation]:
    """One correlation per proxy present, over rows with both values; [] below MIN_POINTS."""
    y = np.array([r.metrics.get(target, math.nan) for r in rows])
    if np.isfinite(y).sum() < MIN_POINTS:
        return []
    report = []
    for proxy in proxy_names(rows):
        x = np.array([r.metrics.get(proxy, math.nan) for r in rows])
        result = correlate(proxy, target, x, y, samples=samples)
        if result is not None:
            report.append(result)
    return report


def correlation_csv(report: Sequence[Correlation]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["proxy", "target", "n", "pearson", "pearson_lo", "pearson_hi"]
        + ["spearman", "spearman_lo", "spearman_hi"]
    )
    for c in report:
        writer.writerow(
            [c.proxy, c.target, c.n, c.pearson, *c.pearson_ci, c.spearman, *c.spearman_ci]
        )
    return out.getvalue()


def summary_lines(report: Sequence[Correlation], target: str, points: int) -> list[str]:
    """The terminal's and frontier.md's lines: one per proxy, with a warning for few points."""
    if not report:
        return [
            f"proxy correlation: needs at least {MIN_POINTS} points with {display_label(target)} "
            f"(have {points})"
        ]
    n = max(c.n for c in report)
    lines = [
        f"proxy correlation with {display_label(target)} (n = {n}; 95 % bootstrap intervals)"
        + (f": {n} points are too few to trust, read the intervals" if n < TRUSTED_POINTS else "")
    ]
    for c in report:
        lines.append(
            f"  {display_label(c.proxy):<22} Pearson {c.pearson:+.2f} "
            f"[{c.pearson_ci[0]:+.2f}, {c.pearson_ci[1]:+.2f}]  Spearman {c.spearman:+.2f} "
            f"[{c.spearman_ci[0]:+.2f}, {c.spearman_ci[1]:+.2f}]"
        )
    return lines


def mlflow_metrics(report: Sequence[Correlation]) -> dict[str, float]:
    """Parent-run metrics: `corr/<proxy>/pearson`, `.../spearman` (with `_lo`/`_hi`), `.../n`."""
    out: dict[str, float] = {}
    for c in report:
        prefix = f"corr/{c.proxy}"
        out[f"{prefix}/n"] = float(c.n)
        for name, value, (lo, hi) in (
            ("pearson", c.pearson, c.pearson_ci),
            ("spearman", c.spearman, c.spearman_ci),
        ):
            out[f"{prefix}/{name}"] = value
            out[f"{prefix}/{name}_lo"] = lo
            out[f"{prefix}/{name}_hi"] = hi
    return {k: v for k, v in out.items() if math.isfinite(v)}


def plot_correlation(rows: Sequence[FrontierRow], c: Correlation, path: Path) -> Path:
    """Proxy against the generation metric, one labelled dot per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        (r.metrics[c.proxy], r.metrics[c.target], r.label)
        for r in rows
        if math.isfinite(r.metrics.get(c.proxy, math.nan))
        and math.isfinite(r.metrics.get(c.target, math.nan))
    ]
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], c="#33658a", s=40)
    for x, y, label in pairs:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax.set_xlabel(axis_label(c.proxy))
    ax.set_ylabel(axis_label(c.target))
    ax.set_title(
        f"{METRICS[parse_metric(c.proxy)[0]].display}: Pearson {c.pearson:+.2f}, "
        f"Spearman {c.spearman:+.2f} (n = {c.n})",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
