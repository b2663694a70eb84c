"""Deployment files for running the frontier sweep on a Ray cluster; see cluster/README.md.

`load_runtime_env()` returns the job runtime environment of `runtime_env.yaml`, with its relative
`working_dir` resolved to the project checkout, ready for
`JobSubmissionClient(...).submit_job(entrypoint=..., runtime_env=load_runtime_env())`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CLUSTER_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLUSTER_DIR.parent
RUNTIME_ENV_FILE = CLUSTER_DIR / "runtime_env.yaml"
KUBERAY_DIR = CLUSTER_DIR / "kuberay"
LAUNCHER_DIR = CLUSTER_DIR / "launcher"

# Schemes Ray accepts as a remote working_dir (a packaged zip); such values are left alone.
_REMOTE_PREFIXES = ("gcs://", "s3://", "gs://", "https://", "http://", "file://")


def _checkout_root() -> Path | None:
    """The checkout this package was imported from, or None when it runs from site-packages.

    Resolving "." against site-packages would upload every installed package, so an installed
    copy never guesses: it uses the current directory and checks that it holds the project.
    """
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else None


def load_runtime_env(
    working_dir: str | Path | None = None,
    env_vars: dict[str, str] | None = None,
    path: str | Path = RUNTIME_ENV_FILE,
) -> dict[str, Any]:
    """The runtime env of `path`, `working_dir` made absolute, `env_vars` merged over the file's.

    `working_dir` (argument or file) is resolved against the checkout this module lives in (or
    the current directory for an installed copy) and must contain the `orchestrator` package:
    a job whose working dir lacks it would fail on every node with an import error instead.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a runtime env must be a mapping, got {type(data).__name__}")
    env = dict(data)

    merged = {**(env.get("env_vars") or {}), **(env_vars or {})}
    bad = {key: value for key, value in merged.items() if not isinstance(value, str)}
    if bad:
        # Ray refuses non-string values only when the job is submitted; fail here instead.
        raise TypeError(f"runtime env env_vars must be strings (quote them in YAML): {bad}")
    if merged:
        env["env_vars"] = merged

    chosen = working_dir if working_dir is not None else env.get("working_dir")
    if chosen is not None and str(chosen).startswith(_REMOTE_PREFIXES):
        env["working_dir"] = str(chosen)
    elif chosen is not None:
        base = _checkout_root() or Path.cwd()
        resolved = (base / Path(chosen).expanduser()).resolve()
        if not (resolved / "orchestrator" / "__init__.py").is_file():
            raise ValueError(
                f"working_dir {resolved} does not contain the orchestrator package; "
                "submit from the repository root or pass working_dir="
            )
        env["working_dir"] = str(resolved)
    return env
