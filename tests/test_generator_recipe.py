"""Generator recipe keys the paper's sweep files rely on, read where the training step runs."""

from __future__ import annotations

from dataclasses import replace

import torch

from orchestrator.config import PRESETS, resolve
from orchestrator.train.generator import GeneratorWorkload
from workloads.dit import LatentStats


def workload(**transport) -> GeneratorWorkload:
    cfg = resolve(PRESETS["micro"]())
    cfg = replace(
        cfg,
        generator=replace(cfg.generator, transport=replace(cfg.generator.transport, **transport)),
    )
    channels = cfg.tokenizer.arch.embed_dim
    stats = LatentStats(mean=torch.zeros(channels), std=torch.ones(channels)).to_dict()
    return GeneratorWorkload(cfg, (), {"latent_stats": stats}, torch.device("cpu"), rank=0)


def test_uniform_t_after_step_switches_the_800_epoch_run_at_600k():
    # paper_release_800.yaml: logit-normal t until 600k steps, uniform from then on (§5.4).
    gen = workload(uniform_t_after_step=600_000)
    assert [gen.time_sampling(s) for s in (0, 599_999, 600_000, 900_000)] == [
        "logit_normal",
        "logit_normal",
        "uniform",
        "uniform",
    ]
    # The step's loss draws t from the objective so chosen.
    assert gen.objectives[gen.time_sampling(600_000)].time_sampling == "uniform"
    t_late = gen.objectives[gen.time_sampling(600_000)].sample_time(4000, torch.device("cpu"))
    t_early = gen.objectives[gen.time_sampling(0)].sample_time(4000, torch.device("cpu"))
    # Uniform puts ~10% of t below 0.1; logit-normal(0, 1) about 1.4%.
    assert (t_late < 0.1).float().mean() > 0.07 > 0.03 > (t_early < 0.1).float().mean()


def test_without_lognorm_t_is_uniform_from_the_start_and_never_switches():
    # paper_table1.yaml rungs 1-3 (before "+ logit-normal t").
    assert workload(use_lognorm=False).time_sampling(0) == "uniform"
    assert workload(uniform_t_after_step=None).time_sampling(10**9) == "logit_normal"
