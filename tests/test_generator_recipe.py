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


def test_on_the_fly_encoding_is_the_frozen_encoders_latent_of_a_mirrored_or_plain_image(tmp_path):
    """`cache.mode: on_the_fly` (RAE): each worker encodes its image batch with the exported
    tokenizer; with `cache.flip` an image is mirrored with p 0.5, drawn from the noise stream
    before encoding, as the sampler's coin picks a cache's flipped latent."""
    from safetensors.torch import save_file

    from orchestrator.storage.models import tokenizer_spec

    decoder = {"patch_size": 2, "width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}
    cfg = build_config(
        load_space("smoke"),
        {
            "tokenizer.family": "rae",
            "tokenizer.vf.foundation": "standin",
            "tokenizer.arch.embed_dim": 96,
            "tokenizer.decoder": decoder,
            "cache.mode": "on_the_fly",
        },
    )
    spec = tokenizer_spec(cfg)
    torch.manual_seed(0)
    weights = tmp_path / "model.safetensors"
    save_file(spec.build().state_dict(), str(weights))
    stats = LatentStats(torch.zeros(96, 8, 8), torch.ones(96, 8, 8)).to_dict()
    inputs = {
        "latent_stats": stats,
        "tokenizer": {
            "spec": {"family": spec.family, "kwargs": spec.kwargs},
            "weights": str(weights),
        },
    }
    gen = GeneratorWorkload(cfg, (), inputs, torch.device("cpu"), rank=0)
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    gen.noise_rng.manual_seed(3)
    batch = gen.encode({"image": images.clone(), "label": torch.zeros(16)})
    assert set(batch) == {"mean", "label"}
    coin = torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5
    assert 0 < coin.sum() < 16
    reference = spec.build(str(weights))
    expected = reference.encode(torch.where(coin.view(-1, 1, 1, 1), images.flip(-1), images)).mean
    torch.testing.assert_close(batch["mean"], expected)
    # The sampler then uses the latent as is (no second coin, no posterior noise).
    z, _ = gen.sampler({**batch, "label": torch.zeros(16, dtype=torch.long)}, gen.noise_rng)
    torch.testing.assert_close(z, expected)
