"""Shared test settings: offline, CPU DeepSpeed, quiet Ray; and shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Offline by construction: an accidental hub download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
