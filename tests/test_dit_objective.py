"""Rectified-flow objective, a short debug training run, EMA and latent normalisation."""

from __future__ import annotations

import json

import pytest
import torch

from workloads.dit import (
    EMA,
    LatentStats,
    LightningDiT_models,
    RectifiedFlowObjective,
    flow_path,
    load_lightningdit_checkpoint,
)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: tiny models run far faster without thread hand-offs on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def debug_model():
    return LightningDiT_models["LightningDiT-Debug/1"](input_size=8, in_channels=4, num_classes=10)


# ---------------------------------------------------------------------------- objective


def test_flow_path_runs_from_noise_at_0_to_data_at_1() -> None:
    x0, x1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    x_t, target = flow_path(x0, x1, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[1], x1[1])
    torch.testing.assert_close(target, x1 - x0)


class RecordingVelocity(torch.nn.Module):
    """Predicts a fixed tensor and records what the objective fed in."""

    def __init__(self, prediction: torch.Tensor) -> None:
        super().__init__()
        self.prediction = prediction

    def forward(self, x, t, y):
        self.seen = (x, t, y)
        return self.prediction


def test_objective_terms_and_reproducibility() -> None:
    x1 = torch.randn(4, 3, 4, 4)
    prediction = torch.randn(4, 3, 4, 4)
    objective = RectifiedFlowObjective(cos_weight=0.5)
    model = RecordingVelocity(prediction)
    terms = objective(model, x1, torch.arange(4), generator=torch.Generator().manual_seed(7))
    x_t, t, _ = model.seen
    # Recover the noise from x_t, then recompute both terms by hand.
    x0 = (x_t - t.view(-1, 1, 1, 1) * x1) / (1 - t.view(-1, 1, 1, 1))
    target = x1 - x0
    mse = (prediction - target).pow(2).mean()
    cos = (1 - torch.nn.functional.cosine_similarity(prediction, target, dim=1)).mean()
    torch.testing.assert_close(terms["mse"], mse, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(terms["cos"], cos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.5 * terms["cos"])
    again = objective(model, x1, torch.arange(4), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(again["loss"], terms["loss"], atol=0, rtol=0)
    assert RectifiedFlowObjective.from_dict(objective.to_dict()) == objective


def test_time_sampling_switch() -> None:
    gen = torch.Generator().manual_seed(0)
    logit_normal = RectifiedFlowObjective().sample_time(20000, torch.device("cpu"), gen)
    uniform = RectifiedFlowObjective(time_sampling="uniform").sample_time(20000, "cpu", gen)
    assert 0 < logit_normal.min() and logit_normal.max() < 1
    # Logit-normal(0, 1) concentrates mass in the middle: P(0.25 < t < 0.75) is about 0.73.
    middle = ((logit_normal > 0.25) & (logit_normal < 0.75)).float().mean()
    assert abs(middle - 0.727) < 0.02
    assert abs(((uniform > 0.25) & (uniform < 0.75)).float().mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="time_sampling"):
        RectifiedFlowObjective(time_sampling="cosine")


def test_debug_model_training_lowers_loss() -> None:
    """200 AdamW steps on 64 fixed latents (10 class templates + noise) cut the loss by > 1/3."""
    gen = torch.Generator().manual_seed(0)
    templates = torch.randn(10, 4, 8, 8, generator=gen)
    labels = torch.arange(64) % 10
    latents = templates[labels] + 0.1 * torch.randn(64, 4, 8, 8, generator=gen)
    torch.manual_seed(0)
    model = debug_model()
    objective = RectifiedFlowObjective()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            losses = [
                objective(model, latents, labels, torch.Generator().manual_seed(100 + i))["loss"]
                for i in range(4)
            ]
        model.train()
        return float(torch.stack(losses).mean())

    before = held_out_loss()
    step_gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        loss = objective(model, latents, labels, generator=step_gen)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    assert after < before * 2 / 3, (before, after)


# ---------------------------------------------------------------------------- EMA


def test_ema_matches_closed_form() -> None:
    init = torch.randn(3, 5)
    target = torch.randn(3, 5)
    decay, steps = 0.9, 25
    ema = EMA([("w", init)], decay=decay)
    for _ in range(steps):
        ema.update([("w", target)])
    expected = target + (init - target) * decay**steps
    torch.testing.assert_close(ema.shadow["w"], expected, atol=1e-6, rtol=1e-6)
    assert ema.num_updates == steps


def test_ema_default_decay_and_fp32_copy() -> None:
    model = debug_model().to(torch.bfloat16)
    ema = EMA.from_model(model)
    assert ema.decay == 0.9999
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    assert list(ema.shadow) == [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        model.pos_embed.add_(1.0)  # the model changes; the copy must not
    assert not torch.equal(ema.shadow["pos_embed"], model.pos_embed.float())


def test_ema_rejects_partial_or_ungathered_updates() -> None:
    ema = EMA([("a", torch.zeros(2)), ("b", torch.zeros(3))])
    with pytest.raises(KeyError, match="missing 1"):
        ema.update([("a", torch.ones(2))])
    with pytest.raises(ValueError, match="ZeRO-3"):
        ema.update([("a", torch.ones(2)), ("b", torch.empty(0))])
    with pytest.raises(KeyError, match="does not track"):
        ema.update([("c", torch.ones(1))])


def test_ema_state_round_trip_and_export() -> None:
    model = debug_model()
    ema = EMA.from_model(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model.named_parameters())
    restored = EMA.from_model(debug_model(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.5 and restored.num_updates == 1
    for name, value in ema.shadow.items():
        torch.testing.assert_close(restored.shadow[name], value)
    target = debug_model()
    ema.copy_to(target)
    torch.testing.assert_close(
        target.final_layer.linear.bias, ema.shadow["final_layer.linear.bias"]
    )
    # The export is a full reference-style "ema" entry, buffers included.
    fresh = debug_model()
    load_lightningdit_checkpoint(fresh, {"ema": ema.model_state_dict(model)})
    torch.testing.assert_close(
        fresh.t_embedder.mlp[0].weight, ema.shadow["t_embedder.mlp.0.weight"]
    )


# ---------------------------------------------------------------------------- latent statistics


def test_latent_stats_from_samples_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, 4, 4, generator=gen) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    z = z + torch.tensor([5.0, -1.0, 0.0]).view(1, 3, 1, 1)
    stats = LatentStats.from_samples([z[:3], z[3:4], z[4:]])
    flat = z.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(stats.mean, flat.mean(dim=1))
    torch.testing.assert_close(stats.std, flat.std(dim=1))  # unbiased, like the reference


def test_latent_stats_apply_invert_and_serialisation() -> None:
    stats = LatentStats(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0]), multiplier=0.5)
    z = torch.randn(2, 2, 3, 3)
    applied = stats.apply(z)
    torch.testing.assert_close(applied[:, 1], (z[:, 1] + 2.0) / 4.0 * 0.5)
    torch.testing.assert_close(stats.invert(applied), z)
    restored = LatentStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    torch.testing.assert_close(restored.std, stats.std)
    assert restored.multiplier == 0.5
    # The reference latents_stats.pt stores (1, C, 1, 1) tensors and no multiplier.
    reference_style = LatentStats.from_dict(
        {"mean": stats.mean.view(1, 2, 1, 1), "std": stats.std.view(1, 2, 1, 1)}
    )
    assert reference_style.mean.shape == (2,) and reference_style.multiplier == 1.0
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        stats.apply(torch.zeros(1, 3, 2, 2))
