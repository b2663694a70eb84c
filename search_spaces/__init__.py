"""Sweep spaces as YAML data, plus the loader that resolves a name or a path to a validated sweep.

A name (`smoke`, `paper_table2`, ...) means `search_spaces/<name>.yaml`; anything else is a path.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import ConfigError, SweepConfig, load_sweep

SPACES_DIR = Path(__file__).resolve().parent
DEFAULT_SPACE = "smoke"


def available() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def space_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    named = SPACES_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    raise ConfigError(
        "--space",
        f"no space named {name_or_path!r} and no such file (known: {', '.join(available())})",
    )


def load_space(name_or_path: str = DEFAULT_SPACE) -> SweepConfig:
    return load_sweep(space_path(name_or_path))
