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
from orchestrator.evaluation.correlation import (
    correlation_csv,
    mlflow_metrics,
    plot_correlation,
    proxy_correlations,
    summary_lines,
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
    from workloads.families import get_family  # imports torch: only once results exist

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
    # Margins and weight mean nothing without a VF loss (REPA-E's and RAE's `vf` names their
    # foundation model, not a loss).
    if tok.vf.enabled and tok.pretrained is None and get_family(tok.family).uses_vf_loss:
        params.update(m1=tok.vf.cos_margin, m2=tok.vf.distmat_margin, vf_weight=tok.vf.vf_weight)
    if tok.stages and tok.pretrained is None:
        params["stages"] = "/".join(s.name for s in tok.stages)
    return params


def trial_overrides(config: dict) -> dict:
    return {**config.get("point", {}).get("overrides", {}), **config.get("overrides", {})}


def finished_configs(sweep: SweepConfig, cli_overrides: dict, grid):
    """(result, resolved config) of every finished trial (failed or unfinished ones left out)."""
    for result in grid:
        if result.error is None and "point_done" in (result.metrics or {}):
            yield result, build_config(sweep, trial_overrides(result.config), cli_overrides)


def result_row(result, cfg: ExperimentConfig) -> FrontierRow:
    """The frontier row of a finished trial."""
    # Every metric of the table (timings and bookkeeping keys are not frontier columns).
    values = {k: float(v) for k, v in result.metrics.items() if is_known(k)}
    return FrontierRow(point_label(cfg), frontier_params(cfg), values)


def collect_rows(sweep: SweepConfig, cli_overrides: dict, grid) -> list[FrontierRow]:
    """One row per finished trial (failed or unfinished trials are left out)."""
    return sort_rows(
        [result_row(result, cfg) for result, cfg in finished_configs(sweep, cli_overrides, grid)]
    )


def sort_rows(rows: list[FrontierRow]) -> list[FrontierRow]:
    return sorted(rows, key=lambda r: tuple(str(r.params.get(k)).zfill(8) for k in PARAM_COLUMNS))


def point_grids(cfg: ExperimentConfig) -> dict[str, str]:
    """Storage paths of a point's picture grids: reconstructions and generated samples."""
    keys = stage_keys(cfg)
    return {
        "reconstructions.png": f"{Artifacts.tokenizer_eval(keys.tokenizer_eval)}/reconstructions.png",
        "samples.png": f"{Artifacts.generator_eval(keys.generator_eval)}/samples.png",
    }


def log_point_grids(
    client, run_id: str, storage: Storage, sweep: SweepConfig, cli_overrides: dict, grid
) -> None:
    """Every finished point's grids onto the parent run, one click from the chart, under
    `points/<label>_<generator-eval key>/` (points that differ only in generator settings share
    a label)."""
    with tempfile.TemporaryDirectory() as tmp:
        for _, cfg in finished_configs(sweep, cli_overrides, grid):
            if not cfg.tracking.log_images:
                continue
            name = point_label(cfg).replace(" ", "_").replace("/", "-")
            folder = Path(tmp) / f"{name}_{stage_keys(cfg).generator_eval[:8]}"
            folder.mkdir()
            for file, rel in point_grids(cfg).items():
                if storage.exists(rel):
                    (folder / file).write_bytes(storage.read_bytes(rel))
            client.log_artifacts(run_id, str(folder), f"points/{folder.name}")


def phase_one_rows(sweep: SweepConfig, cli_overrides: dict, grid) -> dict[int, FrontierRow]:
    """A pruned sweep's first phase: point index -> row of tokenizer metrics."""
    return {
        result.config["point"]["index"]: result_row(result, cfg)
        for result, cfg in finished_configs(sweep, cli_overrides, grid)
    }


def terminal_table(rows: list[FrontierRow], front: list[bool], metrics: list[str]) -> str:
    headers = ["front", "point", *metrics]
    body = [
        ["*" if on else "", r.label, *(_fmt(r.metrics.get(m, math.nan)) for m in metrics)]
        for r, on in zip(rows, front)
    ]
    return table(headers, body)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def write_frontier(
    sweep, ctx, storage: Storage, run_name: str, grid, client, pruning=None
) -> FrontierSummary:
    rows = collect_rows(sweep, ctx.cli_overrides, grid)
    if pruning is not None:
        # Trained points say so beside the pruned ones (tokenizer metrics only, never on a front).
        rows = [FrontierRow(r.label, {**r.params, "status": "trained"}, r.metrics) for r in rows]
        rows = sort_rows(rows + pruning.pruned_rows())
    x, y = frontier_axes(rows, sweep.frontier.x, sweep.frontier.y)
    front = mark_front(rows, x, y)
    present = sorted({m for r in rows for m in r.metrics}, key=metric_order)
    status = ["status"] if pruning is not None else []
    markdown = (
        f"# Frontier of `{sweep.name}`\n\nx = `{x}`: {axis_label(x)}; y = `{y}`: {axis_label(y)}\n\n"
        + frontier_markdown(rows, front, [*PARAM_COLUMNS, *status, *present])
    )
    # The proxies' predictive power on this sweep's own points (evaluation/correlation.py).
    report = proxy_correlations(rows, y)
    trained = sum(math.isfinite(r.metrics.get(y, math.nan)) for r in rows)
    correlation = summary_lines(report, y, trained)
    if pruning is not None and pruning.decision is not None:
        correlation.append(
            f"pruned {len(pruning.decision.pruned)} point(s) by {pruning.decision.proxy}: "
            f"{pruning.saved_gpu_hours:.3g} GPU-hours saved (cost plan)"
        )
    markdown += "\n\n" + "\n".join(correlation) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        plot_frontier(
            rows, front, x, y, local / "frontier.png", f"{sweep.name}: reconstruction vs generation"
        )
        (local / "frontier.csv").write_text(frontier_csv(rows, front))
        (local / "frontier.md").write_text(markdown)
        names = ["frontier.png", "frontier.csv", "frontier.md"]
        if report:
            (local / "proxy_correlation.csv").write_text(correlation_csv(report))
            names.append("proxy_correlation.csv")
        for name in names:
            storage.write_bytes((local / name).read_bytes(), "sweeps", run_name, name)
            client.log_artifact(ctx.parent_run_id, str(local / name))
        for c in report:
            png = plot_correlation(rows, c, local / "proxies" / f"{c.proxy}.png")
            storage.write_bytes(png.read_bytes(), "sweeps", run_name, "proxies", png.name)
            client.log_artifact(ctx.parent_run_id, str(png), "proxies")
    log_point_grids(client, ctx.parent_run_id, storage, sweep, ctx.cli_overrides, grid)
    # The run page's description: the frontier table, read without opening an artifact.
    client.set_tag(ctx.parent_run_id, "mlflow.note.content", markdown)
    client.log_metric(ctx.parent_run_id, "points", float(len(rows)))
    client.log_metric(ctx.parent_run_id, "points_on_front", float(sum(front)))
    for name, value in mlflow_metrics(report).items():
        client.log_metric(ctx.parent_run_id, name, value)
    return FrontierSummary(
        table=terminal_table(rows, front, present) + "\n\n" + "\n".join(correlation),
        chart=storage.uri_for("sweeps", run_name, "frontier.png"),
        csv=storage.uri_for("sweeps", run_name, "frontier.csv"),
        markdown=markdown,
        rows=len(rows),
    )
