"""`python -m orchestrator.frontier`: sweep tokenizer settings and chart the frontier.

With no arguments it runs the embedded smoke space (tiny models, minutes on 2 CPU cores).
`--dry-run` validates the space and prints the resolved plan. User errors exit with status 2 and
one line on stderr; nothing is started before the whole space has been validated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.config import ConfigError, SweepPoint, expand
from orchestrator.config.loading import parse_yaml
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
        help="sweep space: a name in search_spaces/ (smoke, margins, paper_table1, paper_table2, "
        "paper_table4, paper_table5, paper_release, ...) or a path to a YAML file (default: "
        "smoke, the embedded dataset)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate, print the resolved plan, and exit"
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
        overrides[key.strip()] = parse_yaml(raw, f"--set {key.strip()}")
    if args.storage:
        overrides["storage"] = args.storage
    if args.tracking_uri:
        overrides["tracking.tracking_uri"] = args.tracking_uri
    if args.data_root:
        overrides["dataset.root"] = args.data_root
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.schema:
        from orchestrator.config.json_schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    from search_spaces import load_space, space_path

    path = None
    try:
        path = space_path(args.space)
        sweep = load_space(str(path))
        overrides = cli_overrides(args)
        points: list[SweepPoint] = (
            expand(sweep, overrides) if sweep.search.algorithm == "grid" else []
        )
        configs = [p.config for p in points]
        if sweep.search.algorithm == "optuna":
            from orchestrator.config import build_config

            configs = [build_config(sweep, {}, overrides)]
        if not args.dry_run:
            # Checkpoints from outside are read and checked whole before anything starts; a dry
            # run only lists the ones it cannot read (it may run away from the cluster's files).
            from orchestrator.storage.pretrained import check_inputs

            check_inputs(configs)
    except ConfigError as err:
        # Errors found while reading the file already name it (with the line).
        where = "" if path and str(err).startswith(f"{path}:") else f"{args.space}: "
        print(f"error: {where}{err}", file=sys.stderr)
        return EXIT_USER_ERROR

    print(format_plan(sweep, points, Path(path)))
    if args.dry_run:
        return 0
    from orchestrator.data.sources import SourceError
    from orchestrator.sweep.tune import run_sweep

    try:
        return run_sweep(sweep, points, overrides, resume=args.resume)
    except SourceError as err:  # a dataset file that cannot serve: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
