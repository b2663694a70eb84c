"""Sweep spaces: a preset, base overrides and a search, expanded into resolved points."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.identity import StageKeys, stage_keys
from orchestrator.config.loading import (
    ConfigError,
    deep_merge,
    from_dict,
    read_yaml,
    set_dotted,
    to_dict,
)
from orchestrator.config.presets import PRESETS
from orchestrator.config.schema import ExperimentConfig, SweepConfig
from orchestrator.config.validation import resolve


@dataclass(frozen=True)
class SweepPoint:
    """One resolved frontier point of a sweep."""

    index: int
    overrides: dict[str, object]
    config: ExperimentConfig
    keys: StageKeys

    @property
    def label(self) -> str:
        return point_label(self.config)


def point_label(cfg: ExperimentConfig) -> str:
    """Short human label, e.g. `d32 vf=dinov2 m1=0.5 m2=0.25 w=0.1`."""
    tok = cfg.tokenizer
    parts = [f"d{tok.arch.embed_dim}", f"vf={tok.vf.foundation}"]
    if tok.vf.enabled:
        parts += [
            f"m1={tok.vf.cos_margin:g}",
            f"m2={tok.vf.distmat_margin:g}",
            f"w={tok.vf.vf_weight:g}",
        ]
    if tok.stages:
        parts.append("stages=" + "/".join(s.name for s in tok.stages))
    return " ".join(parts)


def load_sweep(path: str | Path) -> SweepConfig:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping at the top level")
    if "name" not in data:
        raise ConfigError(
            "name", "missing (every sweep needs a name: it names the MLflow experiment)"
        )
    sweep = from_dict(SweepConfig, data)
    # Fail before anything starts: the base and every grid/optuna key must be valid.
    build_config(sweep, {})
    for key in sweep.search.grid:
        set_dotted({}, key, None, ExperimentConfig)
    for key in sweep.search.optuna.space:
        set_dotted({}, key, None, ExperimentConfig)
    if len(sweep.search.optuna.metrics) != len(sweep.search.optuna.modes):
        raise ConfigError("search.optuna.modes", "needs one mode per metric")
    return sweep


def build_config(
    sweep: SweepConfig, overrides: dict[str, object], cli_overrides: dict[str, object] | None = None
) -> ExperimentConfig:
    """Preset, then the sweep's `base`, then command-line `--set`, then the point's overrides."""
    data = deep_merge(to_dict(PRESETS[sweep.preset]()), dict(sweep.base))
    for key, value in {**(cli_overrides or {}), **overrides}.items():
        data = set_dotted(data, key, value, ExperimentConfig)
    cfg = from_dict(ExperimentConfig, data)
    return resolve(cfg)


def grid_overrides(sweep: SweepConfig) -> list[dict[str, object]]:
    """The grid's cartesian product, crossed with the explicit points (grid order preserved)."""
    keys = list(sweep.search.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*sweep.search.grid.values())]
    points = list(sweep.search.points) or [{}]
    return [{**point, **combo} for point in points for combo in combos]


def expand(sweep: SweepConfig, cli_overrides: dict[str, object] | None = None) -> list[SweepPoint]:
    """All grid points, each resolved and keyed; any invalid point fails the whole sweep."""
    points = []
    for index, overrides in enumerate(grid_overrides(sweep)):
        try:
            cfg = build_config(sweep, overrides, cli_overrides)
        except ConfigError as err:
            raise ConfigError(err.path, f"{err.message} (in point {index}: {overrides})") from None
        points.append(SweepPoint(index, overrides, cfg, stage_keys(cfg)))
    return points
