"""Pruning (`search.prune`): every tokenizer and its evaluation first, then generators only for
the points a cheap proxy says matter.

Kept: the `keep` best points by the proxy (or the best `keep_fraction`), plus, with
`keep_pareto`, every point on the (reconstruction metric, proxy) Pareto set, so that neither a
tokenizer that reconstructs best nor one that trades reconstruction for a better proxy is lost.
The rest are *pruned*: their MLflow runs hold the tokenizer metrics and the tag
`ldm.status = pruned`, and the chart, the CSV and the summary list them as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.evaluation.pareto import pareto_mask
from workloads.metrics.names import lower_is_better

PRUNED = "pruned"
STATUS_TAG = "ldm.status"


@dataclass(frozen=True)
class PruneDecision:
    proxy: str
    reconstruction: str
    kept: tuple[int, ...]  # point indices whose generators train
    pruned: tuple[int, ...]


def select_points(
    values: dict[int, tuple[float, float]],
    keep: int,
    *,
    reconstruction: str,
    proxy: str,
    keep_pareto: bool,
) -> PruneDecision:
    """`values`: point index -> (reconstruction metric, proxy). The `keep` best by the proxy
    (ties: the lower index), plus the Pareto set when `keep_pareto`. A point whose proxy is
    missing (NaN) ranks last and is never on the front."""
    sign = 1.0 if lower_is_better(proxy) else -1.0
    order = sorted(
        values,
        key=lambda i: (not math.isfinite(values[i][1]), sign * values[i][1], i),
    )
    kept = set(order[:keep])
    if keep_pareto:
        indices = list(values)
        mask = pareto_mask(
            [values[i] for i in indices], (lower_is_better(reconstruction), lower_is_better(proxy))
        )
        kept |= {i for i, on in zip(indices, mask) if on}
    pruned = tuple(sorted(set(values) - kept))
    return PruneDecision(proxy, reconstruction, tuple(sorted(kept)), pruned)


@dataclass(frozen=True)
class Pruning:
    """The first phase's outcome: the decision (None when a tokenizer stage did not finish),
    its rows by point index, its Tune results, and the GPU-hours the plan says it saves."""

    decision: PruneDecision | None
    rows: dict
    first: object
    saved_gpu_hours: float

    def pruned_rows(self) -> list:
        """Frontier rows of the pruned points (tokenizer metrics only), marked pruned."""
        if self.decision is None:
            return []
        rows = []
        for index in self.decision.pruned:
            row = self.rows[index]
            rows.append(type(row)(row.label, {**row.params, "status": PRUNED}, row.metrics))
        return rows
