"""Exact resume and resume on another world size (Ray Train V2 + DeepSpeed ZeRO-1/3, CPU, gloo).

Run A trains 2N steps without interruption. Run B trains N steps and stops (as a preempted job),
then the same job runs again: Ray Train finds the run by name under the storage and hands the
workers the latest checkpoint. fp32 on CPU is deterministic, so the losses after step N and the
exported weights must be bit-equal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from orchestrator.train import DebugHooks
from orchestrator.train.callbacks import read_metrics

pytestmark = pytest.mark.timeout(900)

N = 3
TERMS = ("loss", "mse", "cos")


def _config(train_kit, root: Path, workers: int = 2, zero_stage: int = 1):
    # 32 rows, global batch 8 on 2 workers: 4 steps per epoch, so 2N = 6 crosses an epoch.
    return train_kit.config(
        root, zero_stage=zero_stage, steps=2 * N, checkpoint_every=N, workers=workers
    )


@pytest.fixture(scope="module")
def stopped_run(train_kit, tmp_path_factory):
    """Run B's first half: N steps, then a checkpoint and an early exit."""
    root = tmp_path_factory.mktemp("stopped") / "storage"
    log = root.parent / "metrics.jsonl"
    result = train_kit.fit(
        _config(train_kit, root), "generator", log, DebugHooks(stop_after_step=N)
    )
    assert not result.completed and result.steps == N
    return root, read_metrics(log)


def _resume_copy(stopped_run, tmp_path: Path) -> Path:
    root, _ = stopped_run
    target = tmp_path / "storage"
    shutil.copytree(root, target)
    return target


def _assert_same_continuation(full, full_records, resumed, resumed_records):
    """The resumed run's steps after N and its exported weights equal the uninterrupted run's."""
    assert [r["step"] for r in resumed_records] == list(range(N + 1, 2 * N + 1))
    assert resumed.steps == full.steps == 2 * N
    for before, after in zip(full_records[N:], resumed_records, strict=True):
        assert before["epoch"] == after["epoch"]
        for term in TERMS:
            assert after[term] == before[term], (after["step"], term)
    for name in ("model", "ema"):
        a = load_file(str(Path(full.export_dir) / f"{name}.safetensors"))
        b = load_file(str(Path(resumed.export_dir) / f"{name}.safetensors"))
        assert set(a) == set(b)
        assert all(torch.equal(a[key], b[key]) for key in a), name


def test_exact_resume(train_kit, stopped_run, tmp_path):
    full_root = tmp_path / "uninterrupted"
    full_log = tmp_path / "full.jsonl"
    full = train_kit.fit(_config(train_kit, full_root), "generator", full_log)
    full_records = read_metrics(full_log)

    root = _resume_copy(stopped_run, tmp_path)
    log = tmp_path / "resumed.jsonl"
    resumed = train_kit.fit(_config(train_kit, root), "generator", log)
    resumed_records = read_metrics(log)

    _, first_half = stopped_run
    assert [r["step"] for r in first_half] == list(range(1, N + 1))
    # The second run starts after the checkpoint, not from scratch.
    _assert_same_continuation(full, full_records, resumed, resumed_records)


def test_zero3_rounds_resume_exactly_with_ema(train_kit, tmp_path):
    """ASHA's training rounds under ZeRO-3: round 1 stops at N (the sweep's `stop_after_step`),
    the intermediate evaluation reads the EMA from the checkpoint, round 2 resumes the same run.

    Every round after the first is a resume, and under ZeRO-3 the EMA's start is collective: a
    resume where rank 0 (which alone holds the EMA) skipped the gathers that the other ranks
    entered used to hang. Losses and the exported `model`/`ema` must equal an uninterrupted run.
    """
    from orchestrator.storage.store import Storage
    from orchestrator.train.driver import checkpoint_ema_weights

    full_log = tmp_path / "full.jsonl"
    full = train_kit.fit(
        _config(train_kit, tmp_path / "uninterrupted", zero_stage=3), "generator", full_log
    )
    cfg = _config(train_kit, tmp_path / "rounds", zero_stage=3)
    first_log, second_log = tmp_path / "round1.jsonl", tmp_path / "round2.jsonl"
    first = train_kit.fit(cfg, "generator", first_log, stop_after_step=N)
    assert not first.completed and first.steps == N
    step, ema = checkpoint_ema_weights(cfg, Storage.from_uri(cfg.storage))
    assert step == N and all(torch.isfinite(v).all() for v in ema.values())
    second = train_kit.fit(cfg, "generator", second_log)
    assert [r["step"] for r in read_metrics(first_log)] == list(range(1, N + 1))
    _assert_same_continuation(full, read_metrics(full_log), second, read_metrics(second_log))


def test_resume_on_another_world_size(train_kit, stopped_run, tmp_path):
    """2 workers stopped at N, 1 worker finishes: consolidated weights + EMA + step carry over."""
    root = _resume_copy(stopped_run, tmp_path)
    log = tmp_path / "resumed.jsonl"
    result = train_kit.fit(_config(train_kit, root, workers=1), "generator", log)
    records = read_metrics(log)
    assert [r["step"] for r in records] == list(range(N + 1, 2 * N + 1))
    assert result.steps == 2 * N and result.completed
    ema = load_file(str(Path(result.export_dir) / "ema.safetensors"))
    assert all(torch.isfinite(v).all() for v in ema.values())
    import json

    summary = json.loads((Path(result.export_dir) / "summary.json").read_text())
    # The EMA came back from the 2-worker checkpoint: N updates before, N after.
    assert summary["world_size"] == 1 and summary["ema_updates"] == 2 * N
