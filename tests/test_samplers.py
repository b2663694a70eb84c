"""Samplers: call counts, accuracy on a linear ODE with a known solution, CFG batching, the spec."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workloads.dit import LightningDiT_models
from workloads.samplers import (
    SamplerSpec,
    integrate,
    integrate_trajectory,
    model_velocity,
    sample,
    time_grid,
)

# dx/dt = A x + B t has x(t) = (x0 + B/A^2) e^{A t} - (B/A) t - B/A^2.
A, B = -0.8, 1.5


def exact_solution(x0: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    return (x0 + B / A**2) * math.exp(A * t) - (B / A) * t - B / A**2


class LinearField(torch.nn.Module):
    """A model-shaped toy velocity A x + B t that counts its calls and batch sizes."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward(self, x, t, y):
        self.batch_sizes.append(x.shape[0])
        return A * x + B * t.view(-1, 1, 1, 1)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: tiny models run far faster without thread hand-offs on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_euler_makes_one_call_per_interval(noise: torch.Tensor) -> None:
    field = LinearField().eval()
    sample(field, noise, torch.zeros(3, dtype=torch.long), SamplerSpec("euler", num_steps=250))
    assert len(field.batch_sizes) == 249
    field.batch_sizes.clear()
    sample(field, noise, torch.zeros(3, dtype=torch.long), SamplerSpec("heun", num_steps=9))
    assert len(field.batch_sizes) == 16


@pytest.mark.parametrize(
    ("spec", "atol"),
    [
        (SamplerSpec("euler", 400), 5e-3),
        (SamplerSpec("heun", 65), 1e-4),
        (SamplerSpec("heun", 129, timestep_shift=0.3), 1e-4),
        (SamplerSpec("dopri5", 2), 2e-3),  # the reference tolerances, atol 1e-6 / rtol 1e-3
        (SamplerSpec("dopri5", 2, atol=1e-9, rtol=1e-9), 1e-6),
    ],
    ids=["euler", "heun", "heun-shifted", "dopri5", "dopri5-tight"],
)
def test_linear_field_is_integrated_accurately(
    noise: torch.Tensor, spec: SamplerSpec, atol: float
) -> None:
    field = LinearField().eval()
    final = sample(field, noise, torch.zeros(3, dtype=torch.long), spec)
    torch.testing.assert_close(final, exact_solution(noise), atol=atol, rtol=0)


def test_heun_is_second_order(noise: torch.Tensor) -> None:
    def error(num_steps: int) -> float:
        final = integrate(lambda x, t: A * x + B * t, noise, SamplerSpec("heun", num_steps))
        return float((final - exact_solution(noise)).abs().max())

    assert 3.5 < error(11) / error(21) < 4.5


def test_dopri5_trajectory_reports_the_grid(noise: torch.Tensor) -> None:
    spec = SamplerSpec("dopri5", 5, timestep_shift=0.5, atol=1e-8, rtol=1e-8)
    trajectory = integrate_trajectory(lambda x, t: A * x + B * t, noise, spec)
    assert trajectory.shape == (5, *noise.shape)
    for k, t in enumerate(time_grid(spec).tolist()):
        torch.testing.assert_close(trajectory[k], exact_solution(noise, t), atol=1e-6, rtol=0)


def test_time_grid_and_shift() -> None:
    plain = time_grid(SamplerSpec("euler", 5))
    assert plain.dtype == torch.float32
    torch.testing.assert_close(plain, torch.linspace(0, 1, 5))
    # Shift 0 (the reference's plain setting) and 1 both leave the grid alone.
    torch.testing.assert_close(time_grid(SamplerSpec("euler", 5, timestep_shift=1.0)), plain)
    shifted = time_grid(SamplerSpec("euler", 5, timestep_shift=0.3))
    expected = 0.3 * plain / (1 - 0.7 * plain)
    torch.testing.assert_close(shifted, expected)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted <= plain).all())


# ---------------------------------------------------------------------------- CFG batching


@pytest.fixture
def micro_model():
    torch.manual_seed(0)
    model = LightningDiT_models["LightningDiT-Micro/1"](input_size=4, in_channels=4, num_classes=10)
    return model.eval()


def record_calls(model) -> list[tuple[int, list[int]]]:
    calls: list[tuple[int, list[int]]] = []
    model.register_forward_pre_hook(
        lambda _m, args: calls.append((args[0].shape[0], args[2].tolist()))
    )
    return calls


def test_cfg_scale_one_is_a_plain_conditional_forward(micro_model) -> None:
    calls = record_calls(micro_model)
    noise, y = torch.randn(2, 4, 4, 4), torch.tensor([1, 2])
    final = sample(micro_model, noise, y, SamplerSpec("euler", 4, cfg_scale=1.0))
    assert final.shape == noise.shape
    assert calls == [(2, [1, 2])] * 3


def test_cfg_doubles_the_batch_with_null_labels(micro_model) -> None:
    calls = record_calls(micro_model)
    noise, y = torch.randn(2, 4, 4, 4), torch.tensor([1, 2])
    final = sample(micro_model, noise, y, SamplerSpec("euler", 3, cfg_scale=4.0))
    assert final.shape == noise.shape
    assert calls == [(4, [1, 2, 10, 10])] * 2
    calls.clear()
    sample(micro_model, noise, y, SamplerSpec("euler", 2, cfg_scale=4.0), null_class=7)
    assert calls == [(4, [1, 2, 7, 7])]


def test_cfg_interval_uses_the_conditional_velocity_below_start(micro_model) -> None:
    for p in micro_model.final_layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    noise, y = torch.randn(2, 4, 4, 4), torch.tensor([1, 2])
    # Every Euler evaluation time (0 and 0.5) lies below the interval start: no guidance at all.
    spec = SamplerSpec("euler", 3, cfg_scale=4.0, cfg_interval_start=0.9, cfg_channels=None)
    guided = sample(micro_model, noise, y, spec)
    plain = sample(micro_model, noise, y, SamplerSpec("euler", 3))
    torch.testing.assert_close(guided, plain)
    spec_on = SamplerSpec("euler", 3, cfg_scale=4.0, cfg_interval_start=0.0, cfg_channels=None)
    assert not torch.allclose(sample(micro_model, noise, y, spec_on), plain)
    velocity = model_velocity(micro_model, y, spec_on)
    assert velocity(noise, torch.tensor(0.5)).shape == noise.shape


def test_sample_refuses_train_mode(micro_model) -> None:
    micro_model.train()
    with pytest.raises(ValueError, match="eval"):
        sample(micro_model, torch.randn(1, 4, 4, 4), torch.tensor([0]), SamplerSpec("euler", 2))


# ---------------------------------------------------------------------------- spec


def test_spec_round_trips_through_json() -> None:
    spec = SamplerSpec("dopri5", 2, timestep_shift=0.3, cfg_scale=6.7, cfg_interval_start=0.125)
    restored = SamplerSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    with pytest.raises(ValueError, match="unknown SamplerSpec fields"):
        SamplerSpec.from_dict({**spec.to_dict(), "steps": 3})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "ddim"}, "method"),
        ({"num_steps": 1}, "grid points"),
        ({"num_steps": 2.0}, "int"),
        ({"timestep_shift": -0.1}, "timestep_shift"),
        ({"cfg_scale": float("nan")}, "cfg_scale"),
        ({"cfg_interval_start": 1.5}, "cfg_interval_start"),
        ({"cfg_channels": 0}, "cfg_channels"),
        ({"atol": 0.0}, "atol"),
    ],
)
def test_spec_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplerSpec(**({"method": "euler", "num_steps": 10} | changes))


def test_sampler_settings_are_defined_once():
    """Config, sampler and evaluation spec share one definition (`SamplerSpec`): the config
    section *is* a SamplerSpec with the paper's defaults, and a bad value is one ConfigError."""
    import dataclasses

    from orchestrator.config import ConfigError
    from orchestrator.config.loading import from_dict
    from orchestrator.config.schema import ExperimentConfig, SamplerConfig

    assert issubclass(SamplerConfig, SamplerSpec)
    assert [f.name for f in dataclasses.fields(SamplerConfig)] == [
        f.name for f in dataclasses.fields(SamplerSpec)
    ]
    paper = SamplerConfig()
    assert SamplerSpec.from_dict(paper.to_dict()) == SamplerSpec(
        "euler", 250, timestep_shift=0.3, cfg_scale=10.0, cfg_interval_start=0.1, cfg_channels=3
    )
    with pytest.raises(ConfigError, match=r"^sampler: num_steps counts grid points"):
        from_dict(ExperimentConfig, {"sampler": {"num_steps": 1}})
    with pytest.raises(ConfigError, match="sampler.method"):
        from_dict(ExperimentConfig, {"sampler": {"method": "ddim"}})
