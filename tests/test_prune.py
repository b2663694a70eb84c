"""`search.prune`: the selection rule and its bad inputs. The micro sweep that trains generators
for exactly `keep` points and reports the rest as pruned is test_sweep.py's main one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, load_sweep
from orchestrator.sweep.prune import select_points


def test_keep_the_best_by_the_proxy_plus_the_pareto_set():
    # (rFID, iFID), both lower is better. Point 2 has the best iFID; point 0 the best rFID, so
    # it is on the (rFID, iFID) front too; points 1 and 3 are dominated by 2.
    values = {0: (0.2, 30.0), 1: (0.5, 25.0), 2: (0.3, 10.0), 3: (0.9, 12.0), 4: (0.4, math.nan)}
    decision = select_points(
        values, 1, reconstruction="rfid_50k", proxy="ifid_50k", keep_pareto=True
    )
    assert decision.kept == (0, 2) and decision.pruned == (1, 3, 4)
    decision = select_points(
        values, 2, reconstruction="rfid_50k", proxy="ifid_50k", keep_pareto=False
    )
    assert decision.kept == (2, 3)
    # A higher-is-better proxy ranks the other way; a missing value ranks last.
    decision = select_points(
        values, 4, reconstruction="rfid_50k", proxy="lnc_50k", keep_pareto=False
    )
    assert decision.kept == (0, 1, 2, 3)


def write_space(tmp_path: Path, prune: dict, name: str = "prune_micro") -> Path:
    space = {
        "name": name,
        "preset": "micro",
        # iFID's latent bank: half the micro training split (the preset turns it off).
        "base": {"evaluation": {"proxy_train_images": 60}},
        "search": {"grid": {"tokenizer.vf.foundation": ["none", "standin"]}, "prune": prune},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.mark.parametrize(
    ("prune", "message"),
    [
        ({"proxy": "fd_proxy", "keep": 1}, "search.prune.proxy: `fd_proxy_40` is not a proxy"),
        ({"proxy": "nonsense", "keep": 1}, "search.prune.proxy: `nonsense` is not a known metric"),
        ({"keep": 2}, "search.prune.keep: keeps 2 of the sweep's 2 points"),
        ({"keep_fraction": 1.5}, "search.prune.keep_fraction: must lie in (0, 1)"),
    ],
)
def test_bad_prune_settings_are_one_line(tmp_path, prune, message):
    with pytest.raises(ConfigError) as error:
        load_sweep(write_space(tmp_path, prune))
    assert message in str(error.value) and "\n" not in str(error.value)
