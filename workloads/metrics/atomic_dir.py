"""Publish a cache directory atomically, so concurrent workers never see half-written files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def publish_directory(directory: Path, write: Callable[[Path], None], complete_file: str) -> None:
    """Run `write(staging)` in a sibling temporary directory, then rename it to `directory`.

    rename(2) fails on a non-empty target, so when a concurrent worker published first (its
    `complete_file` exists) its copy is kept: both were built from the same inputs.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(staging)
        try:
            os.replace(staging, directory)
        except OSError:
            if not (directory / complete_file).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
