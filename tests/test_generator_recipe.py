"""Generator recipe keys the paper's sweep files rely on, read where the training step runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from orchestrator.config import PRESETS, build_config, resolve
from orchestrator.train.generator import GeneratorWorkload
from search_spaces import load_space
from workloads.dit import DDPMObjective, LatentStats


def workload(cfg=None, **transport) -> GeneratorWorkload:
    cfg = cfg or resolve(PRESETS["micro"]())
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


def test_ddpm_objective_is_the_one_a_step_trains_with():
    """paper_table1.yaml rung 0: DiT's DDPM with learned sigma, through the workload's loss."""
    sweep = load_space("smoke")
    cfg = build_config(
        sweep,
        {
            "generator.objective": "ddpm",
            "generator.model.learn_sigma": True,
            "generator.transport.use_lognorm": False,
            "generator.transport.use_cosine_loss": False,
            "sampler.method": "ddpm",
            "sampler.timestep_shift": 0.0,
        },
    )
    gen = workload(cfg)
    assert isinstance(gen.objective(0), DDPMObjective) and gen.objective(0).learn_sigma
    torch.manual_seed(0)
    model = gen.new_model()
    assert model.out_channels == 2 * cfg.tokenizer.arch.embed_dim
    channels, grid = cfg.tokenizer.arch.embed_dim, cfg.generator.model.input_size
    batch = {
        "mean": np.zeros((4, channels, grid, grid), np.float32),
        "logvar": np.full((4, channels, grid, grid), -20.0, np.float32),
        "mean_flip": np.zeros((4, channels, grid, grid), np.float32),
        "logvar_flip": np.full((4, channels, grid, grid), -20.0, np.float32),
        "label": np.arange(4, dtype=np.int64),
    }
    loss, terms = gen.loss(model, batch, 0, 0, 0)
    assert set(terms) == {"mse", "vb"} and torch.isfinite(loss)
    loss.backward()
    assert model.final_layer.linear.weight.grad.abs().max() > 0
