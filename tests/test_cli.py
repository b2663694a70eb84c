"""The CLI's first contact: the preflight (dataset layout, storage writable, tracking answering),
typed `--set`, refused flags, `--list` / `--print-config` / `--help`. Every bad input is one line
on stderr and exit 2, within seconds, with nothing written (no storage folder, no MLflow store).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.frontier import EXIT_USER_ERROR, main

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def folder_space(tmp_path: Path) -> Path:
    path = tmp_path / "folder_space.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "folder_micro", "preset": "micro", "base": {"dataset": {"source": "folder"}}}
        )
    )
    return path


def image_tree(root: Path, splits=("train", "val")) -> Path:
    for split in splits:
        (root / split / "n01").mkdir(parents=True)
        (root / split / "n01" / "a.png").write_bytes(b"not really a png")
    return root


def one_error_line(capsys, code: int) -> str:
    out = capsys.readouterr()
    assert code == EXIT_USER_ERROR, (out.out, out.err)
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.out + out.err
    return lines[0]


def test_empty_data_root_and_missing_val_fail_the_dry_run(tmp_path, capsys):
    space, storage = folder_space(tmp_path), tmp_path / "store"
    (tmp_path / "empty").mkdir()
    base = ["--space", str(space), "--storage", str(storage), "--dry-run"]

    line = one_error_line(capsys, main([*base, "--data-root", str(tmp_path / "empty")]))
    assert "dataset.root" in line and "train/" in line

    no_val = image_tree(tmp_path / "no_val", splits=("train",))
    line = one_error_line(capsys, main([*base, "--data-root", str(no_val)]))
    assert "val/" in line and str(no_val) in line

    (tmp_path / "no_classes" / "train").mkdir(parents=True)
    (tmp_path / "no_classes" / "val").mkdir()
    line = one_error_line(capsys, main([*base, "--data-root", str(tmp_path / "no_classes")]))
    assert "no class folder" in line

    # The space file is named once, not twice.
    assert line.count(str(space)) <= 1
    assert not storage.exists()

    assert main([*base, "--data-root", str(image_tree(tmp_path / "good"))]) == 0
    assert "sweep `folder_micro`" in capsys.readouterr().out
    assert not storage.exists(), "the dry run's storage probe left something behind"


def test_unwritable_storage_and_unreachable_endpoints_answer_in_seconds(tmp_path, capsys):
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    line = one_error_line(capsys, main(["--storage", "/proc/ldm_store", "--dry-run"]))
    assert "storage" in line and "/proc/ldm_store" in line and "not writable" in line

    port = free_port()  # nothing listens there
    started = time.monotonic()
    code = main(
        [
            "--storage",
            str(tmp_path / "s"),
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
            "--dry-run",
        ]
    )
    line = one_error_line(capsys, code)
    assert "tracking.tracking_uri" in line and f"127.0.0.1:{port}" in line
    assert time.monotonic() - started < 15

    started = time.monotonic()
    s3 = f"s3://bucket/sweeps?endpoint_override=127.0.0.1:{port}&scheme=http"
    code = main(["--storage", s3, "--tracking-uri", f"sqlite:///{tmp_path}/t.db", "--dry-run"])
    line = one_error_line(capsys, code)
    assert line.startswith("error: smoke: storage: s3://bucket/sweeps")
    assert time.monotonic() - started < 15
    # An object store without a tracking server is caught before any connection.
    line = one_error_line(capsys, main(["--storage", "s3://bucket/x", "--dry-run"]))
    assert "tracking.tracking_uri" in line
    assert not list(tmp_path.iterdir())


def test_set_values_follow_the_key_type(tmp_path, capsys):
    code = main(["--set", "resources.use_gpu=yes", "--set", "tokenizer.arch.ch_mult=[1, 2]",
                 "--set", "generator.optimizer.lr=3e-4", "--print-config", "1",
                 # GPU pools: the smoke preset scores and encodes in the trial's process.
                 "--set", "evaluation.num_workers=null", "--set", "cache.num_actors=null"])  # fmt: skip
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["resources"]["use_gpu"] == "yes"  # not YAML's `true`
    assert cfg["tokenizer"]["arch"]["ch_mult"] == [1, 2]
    assert cfg["generator"]["optimizer"]["lr"] == pytest.approx(3e-4)
    assert cfg["tokenizer"]["vf"]["foundation"] == "standin"  # point 1 of smoke

    line = one_error_line(capsys, main(["--set", "resources.use_gpu=yes", "--dry-run"]))
    assert "evaluation.num_workers" in line and "resources.use_gpu: no" in line
    line = one_error_line(capsys, main(["--set", "tokenizer.arch.ch_mult=[1,2", "--dry-run"]))
    assert "--set tokenizer.arch.ch_mult" in line and "malformed" in line
    line = one_error_line(capsys, main(["--set", "tokenizer.arch.embed_dim=4", "--dry-run"]))
    assert "tokenizer.arch.embed_dim" in line and "varied by the space's search" in line
    line = one_error_line(capsys, main(["--data-root", str(tmp_path), "--dry-run"]))
    assert "--data-root" in line and "embedded" in line
    line = one_error_line(capsys, main(["--print-config", "6"]))
    assert "--print-config" in line


def test_list_and_help_say_what_exists_and_what_exit_codes_mean(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("smoke", "paper_table2", "paper", "debug_cpu", "micro"):
        assert f"  {name} " in out

    help_text = subprocess.run(
        [sys.executable, "-m", "orchestrator.frontier", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for needle in ("exit status:", "130", "driver.log", "--list", "--print-config"):
        assert needle in help_text


def test_a_failure_after_the_preflight_fails_the_parent_run_with_one_line(tmp_path):
    """Files that pass the layout check but are no images fail the ingest stage: the driver
    prints one line pointing at driver.log (which holds the traceback), the parent is FAILED."""
    from mlflow import MlflowClient

    storage, db = tmp_path / "store", tmp_path / "mlflow.db"
    cmd = [
        sys.executable, "-m", "orchestrator.frontier", "--space", str(folder_space(tmp_path)),
        "--data-root", str(image_tree(tmp_path / "data")), "--storage", str(storage),
        "--tracking-uri", f"sqlite:///{db}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    log = storage / "sweeps" / "folder_micro" / "driver.log"
    assert len(errors) == 1 and str(log) in errors[0], output[-4000:]
    assert "Traceback" in log.read_text()
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("folder_micro").experiment_id])
    assert [r.info.status for r in runs if r.data.tags.get("ldm.role") == "parent"] == ["FAILED"]
    assert "RUNNING" not in {r.info.status for r in runs}


def test_the_live_view_gives_an_eta_from_the_first_measured_steps():
    from orchestrator.sweep.progress import format_view, merge_entry

    entry = merge_entry({}, {"state": "running", "stage": "tokenizer:fit"}, 0.0)
    entry = merge_entry(entry, {"stage": "tokenizer", "step": 10, "total": 400}, 100.0)
    assert "left" not in format_view(2, {"p0": entry}, 0.0, 100.0)  # one step: no speed yet
    entry = merge_entry(entry, {"step": 40}, 130.0)  # 30 steps in 30 s, 360 to go
    assert "p0: tokenizer step 40/400 (~6m00s left)" in format_view(2, {"p0": entry}, 0.0, 130.0)
    entry = merge_entry(entry, {"stage": "generator", "step": 0, "total": 100}, 200.0)
    assert "left" not in format_view(2, {"p0": entry}, 0.0, 200.0)  # a new stage, a new speed
