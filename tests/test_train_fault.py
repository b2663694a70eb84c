"""Fault tolerance and the non-finite guard (Ray Train V2 + DeepSpeed, CPU, 2 gloo workers).

A worker SIGKILLed mid-run: Ray Train restarts the worker group (FailureConfig.max_failures)
from the latest checkpoint and the run finishes with the right step count. A loss forced
non-finite at a chosen step: `stop` raises naming the step and the term and writes no further
checkpoint; `skip` leaves the weights alone for that step and counts it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray.train

from orchestrator.train.callbacks import read_metrics
from orchestrator.train.guard import NonFiniteError
from orchestrator.train.hooks import DebugHooks

pytestmark = pytest.mark.timeout(900)


def test_worker_sigkill_restarts_from_checkpoint(train_kit, tmp_path):
    cfg = train_kit.config(
        tmp_path / "storage", zero_stage=2, steps=6, checkpoint_every=2, max_failures=1
    )
    marker = tmp_path / "killed"
    hooks = DebugHooks(kill_at_step=4, kill_rank=1, kill_marker=str(marker))
    log = tmp_path / "metrics.jsonl"
    result = train_kit.fit(cfg, "generator", log, hooks)

    assert marker.exists(), "rank 1 was never killed"
    # Reports the controller had not processed when the group died are lost (a checkpoint
    # report too): the restart point is the last checkpoint the controller registered.
    first, second = _attempts(read_metrics(log))
    assert [r["step"] for r in first] == list(range(1, len(first) + 1)) and len(first) <= 3
    registered = [r["step"] for r in first if r["checkpointed"]]
    restored = second[0]["resumed_from_step"]
    assert restored == (registered[-1] if registered else 0)
    # The restarted group runs every step after the restored checkpoint exactly once.
    assert [r["step"] for r in second] == list(range(restored + 1, 7))
    assert result.completed and result.steps == 6
    summary = json.loads((Path(result.export_dir) / "summary.json").read_text())
    # Updates in the export: exactly 6 (whatever the dead group applied died with it).
    assert summary["steps"] == 6 and summary["ema_updates"] == 6


def _attempts(records: list[dict]) -> list[list[dict]]:
    """Split reports into worker-group attempts: a new attempt restarts the step sequence or
    starts from another checkpoint."""
    attempts = [[records[0]]]
    for record in records[1:]:
        previous = attempts[-1][-1]
        same = record["step"] == previous["step"] + 1 and (
            record["resumed_from_step"] == previous["resumed_from_step"]
        )
        if same:
            attempts[-1].append(record)
        else:
            attempts.append([record])
    return attempts


def test_nonfinite_stop_names_step_and_term(train_kit, tmp_path):
    cfg = train_kit.config(tmp_path / "storage", zero_stage=1, steps=3, checkpoint_every=1)
    log = tmp_path / "metrics.jsonl"
    hooks = DebugHooks(nonfinite_at_step=2, nonfinite_term="nll")
    with pytest.raises(NonFiniteError, match=r"loss terms .*nll.* at step 2") as caught:
        train_kit.fit(cfg, "tokenizer", log, hooks)
    assert caught.value.step == 2 and "nll" in caught.value.terms
    # Step 1 was checkpointed; nothing of step 2 was.
    records = read_metrics(log)
    assert [(r["step"], r["checkpointed"]) for r in records] == [(1, True)]
    run = Path(cfg.storage) / "tokenizers"
    (run_dir,) = run.iterdir()
    latest = ray.train.Result.from_path(str(run_dir))
    assert latest.metrics["step"] == 1


def test_nonfinite_skip_counts_and_continues(train_kit, tmp_path):
    cfg = train_kit.config(tmp_path / "storage", zero_stage=2, steps=3, nonfinite="skip")
    log = tmp_path / "metrics.jsonl"
    result = train_kit.fit(cfg, "generator", log, DebugHooks(nonfinite_at_step=2))
    records = read_metrics(log)
    assert [r["skipped_steps"] for r in records] == [0, 1, 1]
    assert records[1]["loss"] == "nan"
    assert result.completed and result.steps == 3 and result.metrics["skipped_steps"] == 1
    summary = json.loads((Path(result.export_dir) / "summary.json").read_text())
    # The EMA follows applied updates only.
    assert summary["ema_updates"] == 2 and summary["skipped_steps"] == 1
