"""The sweep's frontier: rows from the finished trials, the Pareto chart, CSV and table, logged
onto the sweep's parent MLflow run and written beside the Tune experiment."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import (
    ExperimentConfig,
    SweepConfig,
    build_config,
    point_label,
    stage_keys,
)
from orchestrator.evaluation.pareto import (
    FrontierRow,
    frontier_axes,
    frontier_csv,
    frontier_markdown,
    mark_front,
    plot_frontier,
)
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage
from orchestrator.sweep.plan import table
from workloads.metrics.names import METRICS, axis_label, is_known, parse_metric

PARAM_COLUMNS = ("d", "vf", "m1", "m2", "vf_weight")


def metric_order(name: str) -> int:
    """Column position: the table's order (reconstruction, generation, latent-space proxies)."""
    return list(METRICS).index(parse_metric(name)[0])


@dataclass(frozen=True)
class FrontierSummary:
    table: str
    chart: str
    csv: str
    markdown: str
    rows: int


def frontier_params(cfg: ExperimentConfig) -> dict[str, object]:
    tok = cfg.tokenizer
    if tok.pretrained is not None:  # no VF setting shaped a tokenizer loaded from a file
        params: dict[str, object] = {
            "d": tok.arch.embed_dim,
            "pretrained": Path(tok.pretrained).name,
        }
    else:
        params = {"d": tok.arch.embed_dim, "vf": tok.vf.foundation}
    if cfg.generator.pretrained is not None:
        params["generator"] = Path(cfg.generator.pretrained).name
    if tok.vf.enabled and tok.pretrained is None:  # margins and weight mean nothing without VF
        params.update(m1=tok.vf.cos_margin, m2=tok.vf.distmat_margin, vf_weight=tok.vf.vf_weight)
    if tok.stages and tok.pretrained is None:
        params["stages"] = "/".join(s.name for s in tok.stages)
    return params


def trial_overrides(config: dict) -> dict:
    return {**config.get("point", {}).get("overrides", {}), **config.get("overrides", {})}


def collect_rows(
    sweep: SweepConfig, cli_overrides: dict, grid
) -> list[tuple[FrontierRow, ExperimentConfig]]:
    """One row (with its resolved config) per finished trial; failed or unfinished trials are
    left out."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None or "point_done" not in metrics:
            continue
        cfg = build_config(sweep, trial_overrides(result.config), cli_overrides)
        # Every metric of the table (timings and bookkeeping keys are not frontier columns).
        values = {k: float(v) for k, v in metrics.items() if is_known(k)}
        rows.append((FrontierRow(point_label(cfg), frontier_params(cfg), values), cfg))
    return sorted(
        rows, key=lambda rc: tuple(str(rc[0].params.get(k)).zfill(8) for k in PARAM_COLUMNS)
    )


def point_grids(cfg: ExperimentConfig) -> dict[str, str]:
    """Storage paths of a point's picture grids: reconstructions and generated samples."""
    keys = stage_keys(cfg)
    return {
        "reconstructions.png": f"{Artifacts.tokenizer_eval(keys.tokenizer_eval)}/reconstructions.png",
        "samples.png": f"{Artifacts.generator_eval(keys.generator_eval)}/samples.png",
    }


def log_point_grids(
    client, run_id: str, storage: Storage, rows: list[tuple[FrontierRow, ExperimentConfig]]
) -> None:
    """Every point's grids onto the parent run (`points/<label>/`): one click from the chart."""
    with tempfile.TemporaryDirectory() as tmp:
        for index, (row, cfg) in enumerate(rows):
            if not cfg.tracking.log_images:
                continue
            # Numbered as in the table: points that differ only in generator settings share a label.
            name = row.label.replace(" ", "_").replace("/", "-")
            folder = Path(tmp) / f"{index:02d}_{name}"
            folder.mkdir()
            for name, rel in point_grids(cfg).items():
                if storage.exists(rel):
                    (folder / name).write_bytes(storage.read_bytes(rel))
            client.log_artifacts(run_id, str(folder), f"points/{folder.name}")


def terminal_table(rows: list[FrontierRow], front: list[bool], metrics: list[str]) -> str:
    headers = ["front", "point", *metrics]
    body = [
        ["*" if on else "", r.label, *(_fmt(r.metrics.get(m, math.nan)) for m in metrics)]
        for r, on in zip(rows, front)
    ]
    return table(headers, body)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def write_frontier(sweep, ctx, storage: Storage, run_name: str, grid, client) -> FrontierSummary:
    collected = collect_rows(sweep, ctx.cli_overrides, grid)
    rows = [row for row, _ in collected]
    x, y = frontier_axes(rows, sweep.frontier.x, sweep.frontier.y)
    front = mark_front(rows, x, y)
    present = sorted({m for r in rows for m in r.metrics}, key=metric_order)
    markdown = (
        f"# Frontier of `{sweep.name}`\n\nx = `{x}`: {axis_label(x)}; y = `{y}`: {axis_label(y)}\n\n"
        + frontier_markdown(rows, front, [*PARAM_COLUMNS, *present])
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        plot_frontier(
            rows, front, x, y, local / "frontier.png", f"{sweep.name}: reconstruction vs generation"
        )
        (local / "frontier.csv").write_text(frontier_csv(rows, front))
        (local / "frontier.md").write_text(markdown)
        for name in ("frontier.png", "frontier.csv", "frontier.md"):
            storage.write_bytes((local / name).read_bytes(), "sweeps", run_name, name)
            client.log_artifact(ctx.parent_run_id, str(local / name))
    log_point_grids(client, ctx.parent_run_id, storage, collected)
    # The run page's description: the frontier table, read without opening an artifact.
    client.set_tag(ctx.parent_run_id, "mlflow.note.content", markdown)
    client.log_metric(ctx.parent_run_id, "points", float(len(rows)))
    client.log_metric(ctx.parent_run_id, "points_on_front", float(sum(front)))
    return FrontierSummary(
        table=terminal_table(rows, front, present),
        chart=storage.uri_for("sweeps", run_name, "frontier.png"),
        csv=storage.uri_for("sweeps", run_name, "frontier.csv"),
        markdown=markdown,
        rows=len(rows),
    )
