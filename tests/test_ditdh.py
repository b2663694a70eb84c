"""DiT^DH (RAE's DiT with a DDT head) reproduces the public parity vectors, in RAE's time and in
ours, and `time_shift: auto` is RAE's dimension-dependent shift in training and sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel

from workloads.dit import LightningDiT_models
from workloads.dit.ddt import DiTDH, dimension_shift

REF = Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(scope="module")
def parity():
    meta = json.loads((REF / "ditdh_tiny_parity.json").read_text())
    tensors = load_file(str(REF / "ditdh_tiny_parity.safetensors"))
    kwargs = dict(meta["constructor_kwargs"])
    (width, head_width), (depth, head_depth) = kwargs.pop("hidden_size"), kwargs.pop("depth")
    heads, head_heads = kwargs.pop("num_heads")
    model = DiTDH(
        hidden_size=width,
        depth=depth,
        num_heads=heads,
        head_width=head_width,
        head_depth=head_depth,
        head_heads=head_heads,
        **kwargs,
    ).eval()
    weights = {key: tensors[f"weights.{key}"] for key in meta["weight_keys"]}
    model.load_state_dict(weights, strict=True)
    # Same keys in the same order as the reference state dict.
    assert list(model.state_dict()) == meta["weight_keys"]
    return meta, tensors, model


def test_forward_trunk_and_cfg_match_the_reference(parity):
    meta, f, model = parity
    tol = meta["tolerances"]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        trunk = model.trunk(f["x"], f["t"], f["y"])
        out = model.velocity_rae(f["x"], f["t"], f["y"])
        # RAE's cfg_interval (0, 0.7) in RAE time is guidance where our t >= 0.3.
        cfg = model.forward_with_cfg(
            f["cfg_x"],
            1 - f["cfg_t"],
            f["cfg_y"],
            cfg_scale=2.5,
            cfg_interval_start=0.3,
            cfg_channels=None,
        )
        ours = model(f["x"], 1 - f["t"], f["y"])
    for key, actual in (("trunk_s", trunk), ("out", out)):
        torch.testing.assert_close(actual, f[key], atol=tol[key], rtol=tol[key], msg=key)
    # Our convention is v(x, t) = -v_rae(x, 1 - t); 1 - (1 - t) rounds, hence the tolerance.
    torch.testing.assert_close(-cfg, f["cfg_out"], atol=tol["cfg_out"], rtol=tol["cfg_out"])
    torch.testing.assert_close(-ours, f["out"], atol=1e-4, rtol=1e-4)


def test_registry_builds_a_head_on_any_size():
    model = LightningDiT_models["LightningDiT-Micro/1"](
        input_size=4, in_channels=8, num_classes=3, head={"depth": 1, "width": 48, "heads": 2}
    )
    assert isinstance(model, DiTDH) and model.head_width == 48 and len(model.blocks) == 2
    x, t, y = torch.randn(2, 8, 4, 4), torch.rand(2), torch.tensor([0, 2])
    assert model(x, t, y).shape == x.shape
    # W is a buffer: DeepSpeed checkpoints keep it (a frozen parameter would be re-drawn).
    assert "t_embedder.W" in dict(model.named_buffers())


def test_dimension_shift_is_rae_s_and_maps_to_our_timestep_shift():
    assert dimension_shift(768, 16, 16) == pytest.approx(6.928, abs=1e-3)
    s, t = dimension_shift(32, 16, 16), torch.linspace(0, 1, 11)
    rae = s * (1 - t) / (1 + (s - 1) * (1 - t))  # RAE's map on RAE time 1 - t
    ours = (1 / s) * t / (1 + (1 / s - 1) * t)  # LightningDiT's timestep_shift 1/s on our t
    torch.testing.assert_close(1 - rae, ours)
    assert math.isclose(s, math.sqrt(2))


def test_time_shift_moves_training_times_toward_noise():
    from workloads.dit import RectifiedFlowObjective

    plain = RectifiedFlowObjective(time_sampling="uniform")
    shifted = RectifiedFlowObjective(time_sampling="uniform", time_shift=4.0)

    def draw(objective):
        return objective.sample_time(4096, torch.device("cpu"), torch.Generator().manual_seed(0))

    t, t_shift = draw(plain), draw(shifted)
    torch.testing.assert_close(t_shift, t / (4.0 + (1 - 4.0) * t))
    assert t_shift.mean() < t.mean() - 0.2  # t = 0 is noise here


def test_config_auto_shift_head_and_bad_values():
    from orchestrator.config import ConfigError
    from orchestrator.config.space import build_config
    from orchestrator.storage.models import build_generator, generator_kwargs
    from search_spaces import load_space

    head = {"depth": 1, "width": 48, "heads": 2}
    cfg = build_config(
        load_space("smoke"),
        {"generator.model.head": head, "generator.training.time_shift": "auto"},
    )
    model = cfg.generator.model
    s = math.sqrt(model.in_channels * model.input_size**2 / 4096)
    assert cfg.generator.training.time_shift == pytest.approx(s)
    assert cfg.sampler.timestep_shift == pytest.approx(1 / s)  # the same shift in sampling
    assert generator_kwargs(cfg)["head"] == head
    assert isinstance(build_generator(cfg), DiTDH)
    bad = {
        "generator.training.time_shift": (-1.0, r"time_shift: must be > 0 or auto"),
        "generator.model.head": ({"depth": 1, "width": 50, "heads": 4}, r"head\.width: 50"),
    }
    for key, (value, pattern) in bad.items():
        with pytest.raises(ConfigError, match=pattern):
            build_config(load_space("smoke"), {key: value})
    with pytest.raises(ConfigError, match=r"sampler\.timestep_shift: 0\.7 contradicts"):
        build_config(
            load_space("smoke"),
            {"generator.training.time_shift": 2.0, "sampler.timestep_shift": 0.7},
        )
