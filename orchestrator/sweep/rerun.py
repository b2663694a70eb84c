"""A rerun resumes the sweep it names only with the settings that sweep was started with.

`Tuner.restore` brings the stored trial configs back and ignores the ones a rerun passes: a
rerun with other `--set` values (or an edited sweep file) would silently train and chart the old
settings under the new command. So the first run stores what it was started with
(`<storage>/sweeps/<name>/settings.json`: the resolved sweep and the CLI overrides), and a
rerun that differs refuses before anything starts, naming the keys.
"""

from __future__ import annotations

import json

from orchestrator.config import SweepConfig, to_dict
from orchestrator.config.loading import ConfigError
from orchestrator.storage.store import Storage

SETTINGS = "settings.json"
# The Tune experiment's directory under `sweeps/<name>/` (`tune.make_tuner` names it).
TUNE_DIR = "tune"
# Keys shown in the one-line error before "and N more".
SHOWN = 4


def sweep_settings(sweep: SweepConfig, cli_overrides: dict) -> dict:
    """What a run of the sweep was started with, as plain JSON-ready data."""
    # The description changes nothing a trial runs.
    resolved = {k: v for k, v in to_dict(sweep).items() if k != "description"}
    # The JSON round trip makes tuples lists, as they come back from the stored file.
    return json.loads(json.dumps({"sweep": resolved, "overrides": cli_overrides}))


def check_rerun(storage: Storage, run_name: str, settings: dict) -> None:
    """Record `settings` for a new sweep, or refuse (ConfigError) a rerun that changes them.

    Only a sweep whose Tune experiment exists binds its settings: a first run that stopped
    before Tune started (a bad data root, say) may be rerun with corrected ones.
    """
    started = storage.exists("sweeps", run_name, TUNE_DIR)
    if not started or not storage.exists("sweeps", run_name, SETTINGS):
        storage.write_json(settings, "sweeps", run_name, SETTINGS)
        return
    stored = storage.read_json("sweeps", run_name, SETTINGS)
    changed = sorted(_label(key) for key in _differences(stored, settings))
    if not changed:
        return
    shown = ", ".join(changed[:SHOWN]) + (
        f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
    )
    raise ConfigError(
        "--resume",
        f"sweep `{run_name}` under {storage.uri_for('sweeps', run_name)} was started with other "
        f"settings ({shown}); rerun with the same settings to resume it, or with --no-resume to "
        "start a new sweep",
    )


def _label(key: str) -> str:
    """`overrides.a.b` -> `--set a.b`; `sweep.x.y` -> `x.y` (the sweep file's key)."""
    if key.startswith("overrides."):
        return f"--set {key.removeprefix('overrides.')}"
    return key.removeprefix("sweep.")


def _differences(old: object, new: object, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ (`overrides.<key>` for CLI overrides, `sweep.<path>`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old) | set(new)
        return {
            key
            for name in keys
            for key in (
                _differences(old.get(name), new.get(name), f"{prefix}{name}.")
                if name in old and name in new
                else {f"{prefix}{name}"}
            )
        }
    return set() if old == new else {prefix.rstrip(".")}
