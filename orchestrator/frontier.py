"""`python -m orchestrator.frontier`: sweep tokenizer settings and chart the frontier.

With no arguments it runs the embedded smoke space (tiny models, minutes on 2 CPU cores).
`--dry-run` validates the space, checks what it points at (the preflight: dataset layout,
storage writable, tracking server answering) and prints the resolved plan. User errors exit
with status 2 and one line on stderr; nothing is started before all of that has passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path

import yaml

from orchestrator.config import ConfigError, ExperimentConfig, SweepPoint, expand
from orchestrator.config.loading import DuplicateKeyError, StrictLoader
from orchestrator.sweep.plan import format_plan

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    every point finished and the frontier was written
  1    a trial failed, or the driver failed after the preflight (its MLflow parent run is
       FAILED; the traceback is in the driver log)
  2    a user error: the space, a --set or flag, or the preflight (dataset layout, storage
       writable, tracking server answering); one line on stderr, nothing started
  130  interrupted (Ctrl+C, SIGTERM, `ray job stop`): unfinished runs are KILLED; run the same
       command again to resume

logs:
  <storage>/sweeps/<name>/driver.log   the driver's log (Ray, Tune, MLflow, tracebacks)
  /tmp/ray/session_latest/logs/        Ray's worker logs (the local run's own Ray)

see also: --list (spaces and presets), --print-config (a point's resolved keys), --dry-run
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.frontier",
        description=(
            "Chart the reconstruction-generation frontier: for every point of a sweep space, train "
            "a VA-VAE tokenizer, evaluate it, cache latents, train a LightningDiT on them, evaluate "
            "it, and plot reconstruction vs generation with the Pareto front."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--space",
        default="smoke",
        help="sweep space: a name in search_spaces/ (see --list) or a path to a YAML file "
        "(default: smoke, the embedded dataset)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, run the preflight, print the resolved plan, and exit",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the sweep spaces and presets, and exit"
    )
    parser.add_argument(
        "--print-config",
        nargs="?",
        type=int,
        const=0,
        metavar="POINT",
        help="print every resolved key of point POINT (default 0) as YAML, and exit",
    )
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON Schema of sweep files (shipped as search_spaces/frontier.schema.json, "
        "for YAML editors) and exit",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under --storage)",
    )
    parser.add_argument(
        "--storage",
        help="where every stage writes: a local dir, NFS mount or s3:// / gs:// URI (default ./runs)",
    )
    parser.add_argument(
        "--data-root",
        help="dataset root (sets dataset.root): <split>/<class>/ folders, or Parquet / tar "
        "shards with dataset.source parquet / webdataset; local or s3:// / gs://",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every point, e.g. --set generator.training.steps=1000 "
        "(parsed as the key's type; a key the space's search varies is refused)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="GPU_HOURS",
        help="refuse (exit 2) a sweep whose cost plan exceeds this many GPU-hours at "
        "resources.tflops_per_gpu (printed with --dry-run)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="measure the TFLOP/s of a few real training steps of the first point's tokenizer "
        "and generator on this machine's device and plan with it instead of "
        "resources.tflops_per_gpu",
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted sweep of the same name (default) or start afresh",
    )
    return parser.parse_args(argv)


def key_type(dotted: str) -> object:
    """The declared type of a dotted ExperimentConfig key (unknown keys: `Any`, and the config
    loader names them with a suggestion)."""
    tp: object = ExperimentConfig
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp) or part not in typing.get_type_hints(tp):
            return typing.Any
        tp = typing.get_type_hints(tp)[part]
    return tp


def _takes_raw_string(tp: object) -> bool:
    """True when the key holds text: a str, or a choice of strings (`use_gpu: yes`)."""
    if tp is str:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_takes_raw_string(a) for a in typing.get_args(tp) if a is not type(None))
    return False


def parse_value(key: str, raw: str) -> object:
    """`--set` text -> value of the key's type: text keys keep the text (YAML would turn `yes`
    into true and `1e-4` into a string); everything else is read as YAML (numbers, lists)."""
    if _takes_raw_string(key_type(key)) and raw.strip() not in ("null", "~", ""):
        return raw
    try:
        # Strict: `--set a.b={x: 1, x: 2}` is refused like a duplicate key in a sweep file.
        return yaml.load(raw, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as err:
        raise ConfigError(f"--set {key}", str(err)) from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"--set {key}", f"malformed value {raw!r} ({problem})") from None


def cli_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        overrides[key] = parse_value(key, raw)
    if args.storage:
        overrides["storage"] = args.storage
    if args.tracking_uri:
        overrides["tracking.tracking_uri"] = args.tracking_uri
    if args.data_root:
        overrides["dataset.root"] = args.data_root
    return overrides


def searched_keys(sweep) -> set[str]:
    """Keys the space's search sets per point (grid, explicit points, Optuna)."""
    keys = set(sweep.search.grid)
    for point in sweep.search.points:
        keys |= set(point)
    if sweep.search.algorithm == "optuna":
        keys |= set(sweep.search.optuna.space)
    return keys


def check_flags(args: argparse.Namespace, sweep, overrides: dict, base) -> None:
    """Refuse what would be silently overridden or ignored."""
    for key in overrides:
        if key in searched_keys(sweep):
            flag = {"storage": "--storage", "dataset.root": "--data-root"}.get(key, f"--set {key}")
            raise ConfigError(
                flag,
                f"`{key}` is varied by the space's search; a value for every point would "
                "be overridden per point (edit the space's grid instead)",
            )
    if args.data_root and base.dataset.source == "embedded":
        raise ConfigError(
            "--data-root",
            f"the space's dataset.source is `{base.dataset.source}` (generated images), which "
            "reads no image folder; add --set dataset.source=folder to train on yours",
        )


def list_spaces() -> str:
    from orchestrator.config import PRESETS
    from search_spaces import SPACES_DIR, available, load_space

    lines = ["sweep spaces (--space NAME, or --space path/to/file.yaml):"]
    for name in available():
        try:
            sweep = load_space(name)
            lines.append(f"  {name:<20} {sweep.description} [preset {sweep.preset}]")
        except ConfigError as err:
            lines.append(f"  {name:<20} (invalid: {err})")
    lines.append(f"  (files in {SPACES_DIR})")
    lines.append("presets (a space's `preset:`):")
    for name, make in PRESETS.items():
        doc = (make.__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<20} {doc[0] if doc else ''}")
    lines.append("keys: --print-config shows every key of a point; --set KEY=VALUE changes one")
    return "\n".join(lines)


def cost_point(base: ExperimentConfig) -> SweepPoint:
    """An Optuna space's plan prices its base config once (its samples are unknown before)."""
    from orchestrator.config import stage_keys

    return SweepPoint(0, {}, base, stage_keys(base))


def plan_cost(sweep, points: list[SweepPoint], base: ExperimentConfig, measure: bool = False):
    from orchestrator.sweep.cost import calibrate, sweep_cost

    planned = points or [cost_point(base)]
    tflops = None
    if measure:
        tflops, device = calibrate(planned[0].config)
        print(
            f"calibrated: {tflops:.3g} TFLOP/s measured on {device} (replaces "
            "resources.tflops_per_gpu in the plan)"
        )
    return sweep_cost(planned, tflops)


def check_budget_floor(budget: float, cost) -> None:
    """A budget below the cheapest single point can run nothing: one line, exit 2."""
    index = min(cost.points, key=cost.point_flops)
    cheapest = cost.hours(cost.point_flops(index))
    if budget < cheapest:
        raise ConfigError(
            "--budget",
            f"{budget:g} GPU-hours is below the cheapest point (point {index}: "
            f"{cheapest:.3g} GPU-hours at resources.tflops_per_gpu "
            f"{cost.tflops_per_gpu:g})",
        )


def loopback_only() -> None:
    """A run without RAY_ADDRESS starts its own Ray on this machine: keep every socket of it (GCS,
    raylet, workers, Train's rendezvous) on 127.0.0.1. Ray's one-machine mode does that, and Ray
    reads the switch once, at import, so it is set before anything imports ray. A cluster job
    (RAY_ADDRESS set) keeps the cluster's own binding."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loopback_only()  # before anything imports ray
    if args.schema:
        from orchestrator.config.json_schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    from search_spaces import load_space, space_path

    if args.list:
        print(list_spaces())
        return 0
    path: Path | None = None
    try:
        path = space_path(args.space)
        sweep = load_space(str(path))
        overrides = cli_overrides(args)
        points: list[SweepPoint] = (
            expand(sweep, overrides) if sweep.search.algorithm == "grid" else []
        )
        from orchestrator.config import build_config

        base = build_config(sweep, {}, overrides)
        check_flags(args, sweep, overrides, base)
        if args.print_config is not None:
            if points and not 0 <= args.print_config < len(points):
                raise ConfigError(
                    "--print-config", f"no point {args.print_config} (0..{len(points) - 1})"
                )
            from orchestrator.config import dump_yaml

            print(dump_yaml(points[args.print_config].config if points else base), end="")
            return 0
        configs = [p.config for p in points] or [base]
        cost = plan_cost(sweep, points, base, args.calibrate)
        if args.budget is not None:
            check_budget_floor(args.budget, cost)
        if not args.dry_run:
            # Checkpoints from outside are read and checked whole before anything starts; a dry
            # run only lists the ones it cannot read (it may run away from the cluster's files).
            from orchestrator.storage.pretrained import check_inputs

            check_inputs(configs)
        from orchestrator.sweep.preflight import preflight

        notes = preflight(configs, dry_run=args.dry_run)
    except ConfigError as err:
        # An error that names the space file already is not prefixed with it a second time.
        where = "" if path is not None and str(path) in str(err) else f"{args.space}: "
        print(f"error: {where}{err}", file=sys.stderr)
        return EXIT_USER_ERROR

    planned = points or [cost_point(base)]
    print(format_plan(sweep, planned, Path(path), cost))
    for note in notes:
        print(note)
    if args.budget is not None:
        from orchestrator.sweep.plan import planned_gpu_hours

        spend = planned_gpu_hours(sweep, planned, cost)
        if spend > args.budget:
            print(
                f"error: {args.space}: the plan above spends {spend:.3g} GPU-hours, over "
                f"--budget {args.budget:g} (prune with search.prune, or raise the budget)",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
    if args.dry_run:
        return 0
    from orchestrator.data.sources import SourceError
    from orchestrator.sweep.tune import run_sweep

    try:
        return run_sweep(sweep, points, overrides, resume=args.resume)
    except SourceError as err:  # a dataset file that cannot serve: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ConfigError as err:  # the cluster cannot run it (sweep/resources.py)
        print(f"error: {args.space}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
