"""LightningDiT and its Euler sampler reproduce the reference parity vectors (CPU, float32).

The vectors come from hustvl/LightningDiT@2725fed run on CPU with the SDPA math kernel; see
tests/data/reference/README.md. Every computed tensor is compared with its JSON tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel

from workloads.dit import LightningDiT
from workloads.samplers import SamplerSpec, integrate_trajectory, model_velocity, sample, time_grid

MODEL_FILES = ["lightningdit_tiny_parity", "lightningdit_tiny_altflags_parity"]
# Intermediate tensors and the submodule whose forward output each one is.
INTERMEDIATES = {
    "inter.x_embedder_out": "x_embedder",
    "inter.t_emb": "t_embedder",
    "inter.y_emb": "y_embedder",
    "inter.block0_out": "blocks.0",
    "inter.block1_out": "blocks.1",
    "inter.final_layer_out": "final_layer",
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: tiny models run far faster without thread hand-offs on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ref_dir() -> Path:
    # Committed with the repo (tests/data/reference/README.md): a fresh clone runs these tests.
    return Path(__file__).resolve().parent / "data" / "reference"


def load_parity(ref_dir: Path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads((ref_dir / f"{name}.json").read_text())
    return meta, load_file(str(ref_dir / f"{name}.safetensors"))


def build_reference_model(meta: dict, tensors: dict[str, torch.Tensor]) -> LightningDiT:
    model = LightningDiT(**meta["constructor_kwargs"]).eval()
    model.load_state_dict({k: tensors[k] for k in meta["weight_keys"]}, strict=True)
    return model


def assert_matches(actual: torch.Tensor, tensors: dict, meta: dict, key: str) -> None:
    torch.testing.assert_close(
        actual, tensors[key], **meta["tolerances"]["computed_tensors"][key], msg=key
    )


@pytest.mark.parametrize("name", MODEL_FILES)
def test_state_dict_layout_and_fixed_tables(ref_dir: Path, name: str) -> None:
    meta, tensors = load_parity(ref_dir, name)
    state = LightningDiT(**meta["constructor_kwargs"]).state_dict()
    assert list(state) == meta["weight_keys"]
    for key in meta["weight_keys"]:
        assert state[key].shape == tensors[key].shape, key
    # The frozen tables are computed, not loaded: ours must equal the reference's.
    for key in ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin"):
        torch.testing.assert_close(state[key], tensors[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_forward_and_intermediates(ref_dir: Path, name: str) -> None:
    meta, tensors = load_parity(ref_dir, name)
    model = build_reference_model(meta, tensors)
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for key, module_name in INTERMEDIATES.items():
        modules[module_name].register_forward_hook(
            lambda _m, _inp, out, key=key: captured.__setitem__(key, out)
        )
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        out = model(tensors["input.x"], tensors["input.t"], tensors["input.y"])
    assert_matches(out, tensors, meta, "output.forward")
    for key in INTERMEDIATES:
        assert_matches(captured[key], tensors, meta, key)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_forward_with_cfg(ref_dir: Path, name: str) -> None:
    meta, tensors = load_parity(ref_dir, name)
    model = build_reference_model(meta, tensors)
    settings = meta["cfg_settings"]
    x, y = tensors["input.cfg_x"], tensors["input.cfg_y"]
    # Reference cfg_interval=False is our cfg_interval_start=0.0 (guidance always on).
    cases = {
        "output.cfg_nointerval": ("input.cfg_t_high", 0.0),
        "output.cfg_interval_low": ("input.cfg_t_low", settings["cfg_interval_start"]),
        "output.cfg_interval_high": ("input.cfg_t_high", settings["cfg_interval_start"]),
    }
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        for key, (t_key, start) in cases.items():
            guided = model.forward_with_cfg(
                x, tensors[t_key], y, cfg_scale=settings["cfg_scale"], cfg_interval_start=start
            )
            assert_matches(guided, tensors, meta, key)
        raw = model(x, tensors["input.cfg_t_high"], y)
    assert_matches(raw, tensors, meta, "output.cfg_raw_forward_high")


@pytest.fixture(scope="module")
def sampler_case(ref_dir: Path) -> tuple[dict, dict[str, torch.Tensor], LightningDiT]:
    meta, tensors = load_parity(ref_dir, "sampler_tiny_parity")
    model_meta, model_tensors = load_parity(ref_dir, "lightningdit_tiny_parity")
    assert meta["constructor_kwargs"] == model_meta["constructor_kwargs"]
    return meta, tensors, build_reference_model(model_meta, model_tensors)


def test_euler_sampler_with_cfg_interval_and_shift(sampler_case) -> None:
    meta, tensors, model = sampler_case
    run = meta["cfg_run"]
    spec = SamplerSpec(
        method=run["sampling_method"],
        num_steps=run["num_steps"],
        timestep_shift=run["timestep_shift"],
        cfg_scale=run["cfg_scale"],
        cfg_interval_start=run["cfg_interval_start"],
    )
    assert_matches(time_grid(spec), tensors, meta, "cfg.t_grid")
    noise, y = tensors["input.noise"], tensors["input.y_cond"]
    torch.testing.assert_close(tensors["cfg.x_init"], torch.cat([noise, noise]), atol=0, rtol=0)
    half = noise.shape[0]
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        trajectory = integrate_trajectory(model_velocity(model, y, spec), noise, spec)
        final = sample(model, noise, y, spec)
    # The reference evolves the doubled CFG batch; its conditional half is the sample. The second
    # half never feeds back (forward_with_cfg reads only the first half), so we carry only one.
    tol = meta["tolerances"]["computed_tensors"]
    torch.testing.assert_close(
        trajectory, tensors["cfg.trajectory"][:, :half], **tol["cfg.trajectory"]
    )
    assert_matches(final, tensors, meta, "cfg.final_cond_half")
    torch.testing.assert_close(final, tensors["cfg.final"][:half], **tol["cfg.final"])


def test_euler_sampler_plain(sampler_case) -> None:
    meta, tensors, model = sampler_case
    run = meta["plain_run"]
    # Shift 0 is the reference's "no shift" (it shifts only when timestep_shift > 0).
    spec = SamplerSpec(
        run["sampling_method"], run["num_steps"], timestep_shift=run["timestep_shift"]
    )
    assert_matches(time_grid(spec), tensors, meta, "plain.t_grid")
    noise, y = tensors["input.noise"], tensors["input.y_cond"]
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        trajectory = integrate_trajectory(model_velocity(model, y, spec), noise, spec)
        final = sample(model, noise, y, spec)
    assert_matches(trajectory, tensors, meta, "plain.trajectory")
    assert_matches(final, tensors, meta, "plain.final")
