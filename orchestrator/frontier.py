"""`python -m orchestrator.frontier`: sweep tokenizer settings and chart the frontier.

With no arguments it runs the embedded smoke space (tiny models, minutes on 2 CPU cores).
`--dry-run` validates the space and prints the resolved plan. User errors exit with status 2 and
one line on stderr; nothing is started before the whole space has been validated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from orchestrator.config import ConfigError, SweepPoint, expand
from orchestrator.sweep.plan import format_plan

EXIT_USER_ERROR = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.frontier",
        description=(
            "Chart the reconstruction-generation frontier: for every point of a sweep space, train "
            "a VA-VAE tokenizer, evaluate it, cache latents, train a LightningDiT on them, evaluate "
            "it, and plot reconstruction vs generation with the Pareto front."
        ),
    )
    parser.add_argument(
        "--space",
        default="smoke",
        help="sweep space: a name in search_spaces/ (smoke, paper_table2, margins, paper_release) "
        "or a path to a YAML file (default: smoke, the embedded dataset)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate, print the resolved plan, and exit"
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
        "--data-root", help="dataset root with <split>/<class>/ image folders (sets dataset.root)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key for every point, e.g. --set generator.training.steps=1000",
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted sweep of the same name (default) or start afresh",
    )
    return parser.parse_args(argv)


def cli_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        # YAML parsing gives `--set a.b=0.5` a float and `--set a.b=[1,2]` a list.
        overrides[key.strip()] = yaml.safe_load(raw)
    if args.storage:
        overrides["storage"] = args.storage
    if args.tracking_uri:
        overrides["tracking.tracking_uri"] = args.tracking_uri
    if args.data_root:
        overrides["dataset.root"] = args.data_root
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from search_spaces import load_space, space_path

    try:
        path = space_path(args.space)
        sweep = load_space(str(path))
        overrides = cli_overrides(args)
        points: list[SweepPoint] = (
            expand(sweep, overrides) if sweep.search.algorithm == "grid" else []
        )
        if sweep.search.algorithm == "optuna":
            from orchestrator.config import build_config

            build_config(sweep, {}, overrides)
    except ConfigError as err:
        print(f"error: {args.space}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR

    print(format_plan(sweep, points, Path(path)))
    if args.dry_run:
        return 0
    from orchestrator.sweep.tune import run_sweep

    try:
        return run_sweep(sweep, points, overrides, resume=args.resume)
    except ConfigError as err:  # the cluster cannot run it (sweep/resources.py)
        print(f"error: {args.space}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
