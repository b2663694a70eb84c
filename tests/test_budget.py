"""The compute budget's bookkeeping (`orchestrator/sweep/budget.py`)."""

from __future__ import annotations

import time

import pytest

from orchestrator.sweep import budget


def test_ledger_keeps_wall_and_compute_per_stage():
    with budget.point_ledger() as ledger:
        ledger.start("tokenizer")
        budget.record(3.0)
        time.sleep(0.02)
        ledger.start("latent cache")
        budget.record(1.5)
        budget.record(0.5)
        seconds = ledger.stop()
    assert seconds["compute/tokenizer_s"] == 3.0
    assert seconds["compute/latent_cache_s"] == 2.0
    assert seconds["time/tokenizer_s"] >= 0.02
    assert set(seconds) == {
        "time/tokenizer_s",
        "time/latent_cache_s",
        "compute/tokenizer_s",
        "compute/latent_cache_s",
    }
    assert budget.total_compute(seconds) == 5.0
    # Outside a point, a stage's record goes nowhere (a stage called on its own).
    budget.record(7.0)
    assert budget.total_compute(ledger.stop()) == 5.0


def test_absorbed_stages_move_out_of_the_current_one():
    """Stages another process timed inside the current stage (a point's single Train run)
    count as theirs, and their wall seconds leave the current stage's."""
    with budget.point_ledger() as ledger:
        ledger.start("tokenizer")
        time.sleep(0.3)
        budget.record(2.0)
        budget.absorb({"time/generator_s": 0.2, "compute/generator_s": 4.0})
        seconds = ledger.stop()
    assert seconds["compute/tokenizer_s"] == 2.0
    assert seconds["compute/generator_s"] == 4.0
    assert seconds["time/generator_s"] == 0.2
    assert 0.1 - 0.01 <= seconds["time/tokenizer_s"] < 0.2


def test_nested_ledgers_restore_the_outer_one():
    with budget.point_ledger() as outer:
        outer.start("shared inputs")
        with budget.point_ledger() as inner:
            inner.start("generator")
            budget.record(2.0)
        budget.record(1.0)
    assert budget.total_compute(outer.stop()) == 1.0
    assert budget.total_compute(inner.stop()) == 2.0


def test_clock_and_share():
    clock = budget.ComputeClock()
    with clock:
        time.sleep(0.01)
    with clock:
        time.sleep(0.01)
    assert clock.seconds >= 0.02
    rows = budget.per_row(3.0, 4)
    assert rows.sum() == pytest.approx(3.0) and len(rows) == 4
    # 2 cores for 100 s = 200 core-seconds; 120 of them computing.
    assert budget.compute_share(120.0, 100.0, 2.0) == pytest.approx(0.6)
