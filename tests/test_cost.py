"""The cost plan's arithmetic (sweep/cost.py): FLOPs counted on the meta device against a hand
computation, shared stages counted once, pruning and `--budget` refusals."""

from __future__ import annotations

import pytest

from orchestrator.config import SweepConfig, expand
from orchestrator.config.loading import ConfigError
from orchestrator.frontier import check_budget_floor
from orchestrator.sweep.cost import STAGES, dit_flops, gpu_hours, sweep_cost


def test_lightningdit_b1_forward_flops_match_the_hand_count():
    # LightningDiT-B/1 on a 16x16x32 latent (f16d32 at 256 px): 256 tokens of width 768.
    d, depth, tokens, channels = 768, 12, 16 * 16, 32
    swiglu = int(2 / 3 * int(d * 4.0))  # 2048: SwiGLU keeps the MLP's parameter count
    # Parameters every token passes through: qkv + proj, SwiGLU (w12 + w3), patch embedding and
    # the final linear (biases add one multiply-add per output: ignored, < 0.2 %).
    per_token = depth * (4 * d * d + 3 * d * swiglu) + channels * d + d * channels
    attention = depth * 2 * (2 * tokens * tokens * d)  # Q K^T and A V, 2 FLOPs per multiply-add
    hand = 2 * per_token * tokens + attention
    kwargs = {
        "input_size": 16,
        "in_channels": channels,
        "num_classes": 1000,
        "class_dropout_prob": 0.1,
        "learn_sigma": False,
        "use_qknorm": False,
        "use_swiglu": True,
        "use_rope": True,
        "use_rmsnorm": True,
        "wo_shift": False,
    }
    counted = dit_flops("LightningDiT-B/1", tuple(sorted(kwargs.items())))
    assert counted == pytest.approx(hand, rel=0.02)
    # 46 GFLOPs per latent; training at batch 1024 is 3 forwards: ~141 TFLOPs per step.
    assert 45e9 < counted < 47e9


def micro_sweep(grid: dict, prune: dict | None = None) -> SweepConfig:
    search = {"grid": grid, **({"prune": prune} if prune else {})}
    from orchestrator.config.loading import from_dict

    return from_dict(SweepConfig, {"name": "cost", "preset": "micro", "search": search})


def test_shared_stages_are_counted_once_and_pruning_keeps_every_tokenizer():
    # Two samplers on one tokenizer: tokenizer, its evaluation and cache and the generator are
    # shared; only the generator evaluations differ.
    points = expand(micro_sweep({"sampler.num_steps": [4, 8]}))
    cost = sweep_cost(points)
    one = cost.points[0]
    assert [c.stage for c in one] == list(STAGES[:5])  # no ASHA rounds here
    shared = sum(c.flops for c in one if c.stage != "generator eval")
    assert cost.unshared_flops - cost.total_flops == pytest.approx(shared)
    # More sampler steps cost more network evaluations.
    evals = [cost.points[i][-1].flops_per_unit for i in (0, 1)]
    assert evals[1] > evals[0]

    points = expand(micro_sweep({"tokenizer.arch.embed_dim": [4, 8, 16]}))
    cost = sweep_cost(points)
    pruned = cost.pruned_flops(1)
    tokenizers = sum(c.flops for cs in cost.points.values() for c in cs if c.stage in STAGES[:2])
    priciest = max(cost.generator_side(i) for i in cost.points)
    assert pruned == pytest.approx(tokenizers + priciest)
    assert gpu_hours(400e12 * 3600, 400.0) == pytest.approx(1.0)


def test_a_budget_below_the_cheapest_point_is_one_line():
    cost = sweep_cost(expand(micro_sweep({"tokenizer.arch.embed_dim": [4, 8]})))
    cheapest = min(cost.hours(cost.point_flops(i)) for i in cost.points)
    with pytest.raises(ConfigError, match=r"--budget: .* below the cheapest point \(point 0"):
        check_budget_floor(cheapest / 2, cost)
    check_budget_floor(cheapest * 2, cost)  # enough for one point: no error here


def test_dry_run_prints_the_cost_plan_and_refuses_an_over_budget_sweep(tmp_path, capsys):
    from orchestrator.frontier import main
    from search_spaces import load_space

    base = ["--space", "smoke", "--storage", str(tmp_path / "store"), "--dry-run"]
    cost = sweep_cost(expand(load_space("smoke")))
    total = cost.hours(cost.total_flops)
    # Half the total covers the cheapest of the six points but not the sweep: the plan is
    # printed, then one error line with the figures.
    assert main([*base, "--budget", str(total / 2)]) == 2
    captured = capsys.readouterr()
    assert "cost plan at 400 TFLOP/s per GPU" in captured.out
    assert "with search.prune: {keep: 3}: at least" in captured.out
    assert f"spends {total:.3g} GPU-hours, over --budget" in captured.err
    assert captured.err.count("\n") == 1
    # Below the cheapest point: one line and nothing else.
    assert main([*base, "--budget", str(total / 100)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "--budget: " in captured.err and "below the cheapest point" in captured.err


def test_calibrate_measures_the_local_device_and_plans_with_it(tmp_path, capsys):
    from orchestrator.frontier import main

    argv = ["--space", "smoke", "--storage", str(tmp_path / "store"), "--dry-run", "--calibrate"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("calibrated: "))
    measured = float(line.split()[1])
    assert measured > 0 and "measured on cpu" in line
    assert f"cost plan at {measured:.3g} TFLOP/s per GPU (measured by --calibrate)" in out
