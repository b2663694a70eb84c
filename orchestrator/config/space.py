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
from orchestrator.config.schema import (
    ExperimentConfig,
    FrontierConfig,
    OptunaConfig,
    SchedulerConfig,
    SweepConfig,
)
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
    if tok.pretrained is not None:
        parts = [f"d{tok.arch.embed_dim}", f"pretrained={Path(tok.pretrained).name}"]
    else:
        parts = [f"d{tok.arch.embed_dim}", f"vf={tok.vf.foundation}"]
    if tok.family != "vavae" and tok.pretrained is None:
        parts.insert(0, tok.family)
    from workloads.families import get_family  # imports torch: only once configs exist

    # Margins mean nothing where the foundation model is the family's own target (REPA-E).
    if tok.vf.enabled and tok.pretrained is None and get_family(tok.family).uses_vf_loss:
        parts += [
            f"m1={tok.vf.cos_margin:g}",
            f"m2={tok.vf.distmat_margin:g}",
            f"w={tok.vf.vf_weight:g}",
        ]
    if tok.stages and tok.pretrained is None:
        parts.append("stages=" + "/".join(s.name for s in tok.stages))
    if tok.init_from is not None:
        parts.append(f"init={Path(tok.init_from).name}")
    if cfg.generator.pretrained is not None:
        parts.append(f"gen={Path(cfg.generator.pretrained).name}")
    if cfg.generator.model.head is not None:
        parts.append(f"DiT^DH={cfg.generator.model.head.depth}x{cfg.generator.model.head.width}")
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
    base = build_config(sweep, {})
    for key in sweep.search.grid:
        set_dotted({}, key, None, ExperimentConfig)
    if sweep.search.algorithm == "optuna":
        _check_optuna(sweep.search.optuna, base)
    _check_frontier(sweep.frontier, base)
    if sweep.search.scheduler.type == "asha":
        _check_asha(sweep.search.scheduler, base)
    if sweep.search.prune.enabled:
        _check_prune(sweep, base)
    return sweep


def _check_prune(sweep: SweepConfig, base: ExperimentConfig) -> None:
    """A proxy the tokenizer evaluation computes, and fewer points kept than the sweep has."""
    from orchestrator.evaluation.naming import resolve_proxy

    prune = sweep.search.prune
    if sweep.search.algorithm != "grid":
        raise ConfigError("search.prune", "prunes a grid's points (Optuna samples one at a time)")
    if prune.keep is not None and prune.keep_fraction is not None:
        raise ConfigError("search.prune", "set keep or keep_fraction, not both")
    if prune.keep is not None and prune.keep < 1:
        raise ConfigError("search.prune.keep", f"must be >= 1, got {prune.keep}")
    if prune.keep_fraction is not None and not 0 < prune.keep_fraction < 1:
        raise ConfigError(
            "search.prune.keep_fraction", f"must lie in (0, 1), got {prune.keep_fraction}"
        )
    try:
        resolve_proxy(prune.proxy, base)
    except ValueError as error:
        raise ConfigError("search.prune.proxy", str(error)) from None
    points = len(grid_overrides(sweep))
    if prune.kept(points) >= points:
        raise ConfigError(
            "search.prune.keep",
            f"keeps {prune.kept(points)} of the sweep's {points} points: nothing to prune",
        )


OPTUNA_DISTRIBUTIONS = {"choice": ("values",), "uniform": ("low", "high")}
OPTUNA_DISTRIBUTIONS |= {"loguniform": ("low", "high"), "randint": ("low", "high")}


def _check_optuna(opt: OptunaConfig, base: ExperimentConfig) -> None:
    if not opt.space:
        raise ConfigError("search.optuna.space", "is empty: name at least one key to search")
    for key, spec in opt.space.items():
        path = f"search.optuna.space.{key}"
        set_dotted({}, key, None, ExperimentConfig)
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in OPTUNA_DISTRIBUTIONS:
            raise ConfigError(f"{path}.type", f"must be one of {sorted(OPTUNA_DISTRIBUTIONS)}")
        wanted = {"type", *OPTUNA_DISTRIBUTIONS[kind]}
        if set(spec) != wanted:
            raise ConfigError(path, f"a {kind} takes exactly {sorted(wanted)}, got {sorted(spec)}")
        if kind == "choice":
            if not isinstance(spec["values"], list | tuple) or not spec["values"]:
                raise ConfigError(f"{path}.values", "must be a non-empty list")
            continue
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(path, "low and high must be numbers")
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(path, f"needs {'0 < ' if kind == 'loguniform' else ''}low < high")
    if len(opt.metrics) != len(opt.modes) or not opt.metrics:
        raise ConfigError("search.optuna.modes", "needs one mode per metric (and a metric)")
    from orchestrator.evaluation.naming import resolve_metric  # it imports this package

    for name in opt.metrics:
        try:
            resolve_metric(name, base)
        except ValueError as error:
            raise ConfigError("search.optuna.metrics", str(error)) from None


def _check_frontier(frontier: FrontierConfig, base: ExperimentConfig) -> None:
    """An axis is `auto` or a metric the points report (base name or with its count)."""
    from orchestrator.evaluation.naming import resolve_metric

    for axis in ("x", "y"):
        name = getattr(frontier, axis)
        if name == "auto":
            continue
        try:
            resolve_metric(name, base)
        except ValueError as error:
            raise ConfigError(f"frontier.{axis}", str(error)) from None


def _check_asha(sch: SchedulerConfig, base: ExperimentConfig) -> None:
    every = base.evaluation.intermediate_every
    if sch.metric != "fd_intermediate":
        raise ConfigError("search.scheduler.metric", "ASHA runs on `fd_intermediate` only")
    if not 0 < every < base.generator.training.steps:
        raise ConfigError(
            "evaluation.intermediate_every",
            "ASHA needs intermediate evaluations: set it between 1 and generator.training.steps "
            f"({base.generator.training.steps}), in the sweep's base",
        )
    if sch.grace_period < 1 or sch.reduction_factor < 2:
        raise ConfigError(
            "search.scheduler", "needs grace_period >= 1 (rounds) and reduction_factor >= 2"
        )


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
