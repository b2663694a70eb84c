"""DiT's DDPM objective and ancestral sampler (paper Tab. 1, rung 0), kept apart from the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.dit import DDPMObjective, GaussianDiffusion, LatentStats, LightningDiT_models
from workloads.generation import step_noise
from workloads.samplers import SamplerSpec, integrate, sample


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_schedule_is_dits_linear_1000_steps_and_respacing_keeps_the_endpoints():
    diffusion = GaussianDiffusion.linear()
    assert diffusion.num_timesteps == 1000
    assert (diffusion.betas[0], diffusion.betas[-1]) == (1e-4, 0.02)
    assert diffusion.alphas_cumprod[-1] == pytest.approx(4.0358e-05, rel=1e-3)  # DiT's value
    spaced, kept = diffusion.respaced(250)
    assert len(kept) == 250 and (kept[0], kept[-1]) == (0, 999)
    # The sub-schedule reaches the same noise levels at the steps it keeps.
    np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)


class OracleOfOnePoint(torch.nn.Module):
    """The exact eps (and a chosen variance) for data that is always `x_star`."""

    def __init__(self, x_star: torch.Tensor, v: float | None):
        super().__init__()
        self.x_star, self.v = x_star, v
        self.learn_sigma = v is not None
        self.abar = torch.from_numpy(GaussianDiffusion.linear().alphas_cumprod).float()

    def forward(self, x, t, y, variance=False):
        # t is the original step number (0..999), also after respacing.
        abar = self.abar[t.long()].view(-1, 1, 1, 1)
        eps = (x - abar.sqrt() * self.x_star) / (1 - abar).sqrt()
        if self.v is None or not variance:
            return eps
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


def test_hybrid_loss_vanishes_for_exact_eps_and_the_posterior_variance():
    x0 = torch.rand(64, 4, 8, 8) * 2 - 1
    y = torch.zeros(64, dtype=torch.long)
    rng = torch.Generator().manual_seed(3)
    # v = -1 picks the lower end of the learned range, the true posterior's variance: KL = 0.
    exact = DDPMObjective()(OracleOfOnePoint(x0, v=-1.0), x0, y, generator=rng)
    assert exact["mse"] < 1e-6 and exact["vb"] < 1e-4
    wide = DDPMObjective()(OracleOfOnePoint(x0, v=1.0), x0, y, generator=rng)
    assert wide["vb"] > 100 * max(exact["vb"], 1e-6)
    fixed = DDPMObjective(learn_sigma=False)(OracleOfOnePoint(x0, v=None), x0, y, generator=rng)
    assert fixed["vb"] == 0 and fixed["loss"] == fixed["mse"] < 1e-6


def test_vb_trains_the_variance_only():
    torch.manual_seed(0)
    model = LightningDiT_models["LightningDiT-Micro/1"](
        input_size=4, in_channels=4, num_classes=10, learn_sigma=True, use_rope=False
    )
    x0, y = torch.randn(8, 4, 4, 4), torch.randint(0, 10, (8,))
    grads = {}
    for learn_sigma in (True, False):  # the same t and noise: the same seed
        model.zero_grad()
        terms = DDPMObjective(learn_sigma)(model, x0, y, generator=torch.Generator().manual_seed(0))
        terms["loss"].backward()
        grads[learn_sigma] = model.final_layer.linear.weight.grad.clone()
    # Output rows (patch 1): 4 eps channels, then 4 variance channels. The bound's mean is
    # detached, so the eps rows see the MSE alone; only the variance rows learn from it.
    torch.testing.assert_close(grads[True][:4], grads[False][:4])
    assert grads[False][4:].abs().max() == 0 and grads[True][4:].abs().max() > 0


def test_ancestral_sampler_lands_on_the_data_of_an_exact_model():
    x_star = torch.rand(3, 4, 8, 8) * 2 - 1
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(3, dtype=torch.long)
    for v in (None, 0.0):
        model = OracleOfOnePoint(x_star, v).eval()
        out = sample(model, noise, y, SamplerSpec(method="ddpm", num_steps=50))
        torch.testing.assert_close(out, x_star, atol=1e-4, rtol=0)


def test_ddpm_spec_is_no_ode():
    # A shift or CFG interval with ddpm is refused by config validation, naming the key
    # (tests/test_config.py::test_objective_and_sampler_must_match).
    with pytest.raises(ValueError, match="not an ODE solver"):
        integrate(lambda x, t: x, torch.zeros(1, 1, 2, 2), SamplerSpec(method="ddpm", num_steps=4))


def test_step_noise_rows_follow_the_sample_index_not_the_batch():
    pair = step_noise([3, 5], (2, 2, 2), seed=7)
    alone = step_noise([5], (2, 2, 2), seed=7)
    for _ in range(3):  # successive steps stay aligned
        torch.testing.assert_close(pair()[1], alone()[0])


def test_ddpm_generation_with_learned_sigma_and_cfg_is_reproducible_per_index():
    """generate_chunk on a learned-sigma DiT with CFG: every draw comes from the index streams."""
    from workloads.generation import generate_chunk
    from workloads.vavae import AutoencoderKL

    torch.manual_seed(0)
    dit = LightningDiT_models["LightningDiT-Micro/1"](
        input_size=8, in_channels=4, num_classes=10, learn_sigma=True
    ).eval()
    with torch.no_grad():
        for param in dit.parameters():  # the zero-initialised output layer would predict 0
            param.add_(0.05 * torch.randn_like(param))
    vae = AutoencoderKL(embed_dim=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    vae.eval()
    stats = LatentStats(torch.zeros(4), torch.ones(4))
    spec = SamplerSpec(method="ddpm", num_steps=6, cfg_scale=2.0)
    args = (dit, vae, stats, [4, 9, 11], spec, 5, 10, "uniform", (4, 8, 8))
    first, labels = generate_chunk(*args)
    torch.manual_seed(123)  # the global stream plays no part
    again, _ = generate_chunk(*args)
    assert torch.equal(first, again) and first.shape == (3, 16, 16, 3)
    assert first.float().std() > 1.0
    other_seed, _ = generate_chunk(*args[:5], 6, *args[6:])
    assert not torch.equal(first, other_seed)
