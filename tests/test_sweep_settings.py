"""What a rerun of a sweep may change, and which layer retries a failure (no Ray started)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.config import build_config, expand, to_dict
from orchestrator.config.loading import ConfigError
from orchestrator.storage.store import Storage
from orchestrator.sweep.rerun import SETTINGS, TUNE_DIR, check_rerun, sweep_settings
from search_spaces import load_space, space_path


@pytest.fixture
def smoke(tmp_path):
    sweep = load_space(str(space_path("smoke")))
    overrides = {"storage": str(tmp_path / "store"), "generator.training.steps": 8}
    return sweep, overrides, Storage.from_uri(overrides["storage"])


def _started(storage: Storage, name: str) -> None:
    # What Tune leaves behind once the experiment ran (make_tuner names the directory).
    storage.makedirs("sweeps", name, TUNE_DIR)


def test_rerun_with_the_same_settings_resumes(smoke):
    sweep, overrides, storage = smoke
    check_rerun(storage, sweep.name, sweep_settings(sweep, overrides))
    assert storage.exists("sweeps", sweep.name, SETTINGS)
    _started(storage, sweep.name)
    check_rerun(storage, sweep.name, sweep_settings(sweep, dict(overrides)))


def test_rerun_with_other_overrides_names_the_keys(smoke):
    sweep, overrides, storage = smoke
    check_rerun(storage, sweep.name, sweep_settings(sweep, overrides))
    _started(storage, sweep.name)
    changed = {**overrides, "generator.training.steps": 16, "seed": 3}
    with pytest.raises(ConfigError) as err:
        check_rerun(storage, sweep.name, sweep_settings(sweep, changed))
    message = str(err.value)
    assert "\n" not in message
    assert "--set generator.training.steps, --set seed" in message
    assert "--no-resume" in message
    # An edited sweep file is named by its own key; its description is no setting.
    edited = replace(sweep, base={**sweep.base, "seed": 5}, description="other")
    with pytest.raises(ConfigError, match=r"\(base\.seed\)"):
        check_rerun(storage, sweep.name, sweep_settings(edited, overrides))
    check_rerun(storage, sweep.name, sweep_settings(replace(sweep, description="x"), overrides))
    # The stored settings stay those of the sweep that ran.
    stored = storage.read_json("sweeps", sweep.name, SETTINGS)
    assert stored == sweep_settings(sweep, overrides)


def test_settings_bind_only_once_tune_started(smoke):
    """A first run that stopped before Tune (bad input) may be rerun with fixed settings."""
    sweep, overrides, storage = smoke
    check_rerun(storage, sweep.name, sweep_settings(sweep, overrides))
    fixed = {**overrides, "generator.training.steps": 16}
    check_rerun(storage, sweep.name, sweep_settings(sweep, fixed))
    assert storage.read_json("sweeps", sweep.name, SETTINGS) == sweep_settings(sweep, fixed)


def test_one_retry_layer(smoke):
    """Tune never reruns a trial; a training stage's worker group restarts from its checkpoint
    `resources.max_failures` times (driver.fit_stage's FailureConfig, exercised for real by
    test_train_fault.py)."""
    from orchestrator.sweep.tune import SweepContext, make_tuner

    sweep, overrides, storage = smoke
    base = build_config(sweep, {}, overrides)
    assert base.resources.max_failures > 0
    ctx = SweepContext(
        to_dict(sweep), overrides, storage.uri, "sqlite:///unused", "0", "0", False, 1
    )
    tuner = make_tuner(sweep, expand(sweep, overrides), ctx, base, storage, sweep.name, False)
    assert tuner._local_tuner.get_run_config().failure_config.max_failures == 0


def test_cli_rerun_with_other_set_values_exits_2(smoke):
    """The command a user reruns: one line naming the key, exit 2, nothing started or written."""
    import subprocess
    import sys
    from pathlib import Path

    sweep, overrides, storage = smoke
    # What the first `--space smoke --storage <store> --set generator.training.steps=8` stored.
    check_rerun(storage, sweep.name, sweep_settings(sweep, overrides))
    _started(storage, sweep.name)
    before = sorted(p.name for p in storage.local_path().rglob("*"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.frontier",
            "--space",
            "smoke",
            "--storage",
            overrides["storage"],
            "--set",
            "generator.training.steps=16",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(--set generator.training.steps)" in errors[0]
    assert "--no-resume" in errors[0]
    assert sorted(p.name for p in storage.local_path().rglob("*")) == before
