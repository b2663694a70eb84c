"""LightningDiT structure: released schema, size registry, input checks, checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workloads.dit import (
    CheckpointMismatchError,
    LightningDiT,
    LightningDiT_models,
    load_lightningdit_checkpoint,
)

RELEASED_FLAGS = dict(
    use_qknorm=False, use_swiglu=True, use_rope=True, use_rmsnorm=True, wo_shift=False
)
SCHEMA_BUILD = dict(input_size=16, in_channels=32, num_classes=1000, learn_sigma=False)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: tiny models run far faster without thread hand-offs on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def schema() -> dict:
    # Committed with the repo (tests/data/reference/README.md): never skipped.
    path = Path(__file__).resolve().parent / "data" / "reference" / "lightningdit_xl_schema.json"
    return json.loads(path.read_text())


def build_on_meta(name: str, **kwargs) -> LightningDiT:
    with torch.device("meta"):
        return LightningDiT_models[name](**kwargs)


def debug_model(**kwargs) -> LightningDiT:
    torch.manual_seed(0)
    options = dict(input_size=8, in_channels=4, num_classes=10) | kwargs
    return LightningDiT_models["LightningDiT-Debug/1"](**options)


# ---------------------------------------------------------------------------- schema and registry


@pytest.mark.parametrize("name", ["LightningDiT-XL/1", "LightningDiT-B/1"])
def test_preset_equals_reference_schema(schema: dict, name: str) -> None:
    entry = schema["models"][name]
    model = build_on_meta(name, **SCHEMA_BUILD, **RELEASED_FLAGS)
    state = model.state_dict(keep_vars=True)
    expected = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in entry["state_dict"]]
    actual = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    assert actual == expected
    params = dict(model.named_parameters())
    for e in entry["state_dict"]:
        assert (e["kind"] == "parameter") == (e["key"] in params), e["key"]
        if e["kind"] == "parameter":
            assert params[e["key"]].requires_grad == e["requires_grad"], e["key"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == entry["num_trainable_parameters"]


def test_released_defaults_build_xl1() -> None:
    """Constructor defaults are the released recipe (f16d32 latents, released flags)."""
    model = build_on_meta("LightningDiT-XL/1")
    assert len(model.state_dict()) == 351
    assert sum(p.numel() for p in model.parameters()) == 675_256_736


@pytest.mark.parametrize("name", sorted(LightningDiT_models))
def test_every_registry_entry_builds(schema: dict, name: str) -> None:
    model = build_on_meta(name, **SCHEMA_BUILD, **RELEASED_FLAGS)
    assert model.num_classes == 1000
    listed = schema["registry_param_counts_with_released_flags"].get(name)
    if listed is not None:
        assert sum(p.numel() for p in model.parameters()) == listed["num_parameters"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == listed["num_trainable_parameters"]
        assert len(model.state_dict()) == listed["num_state_dict_entries"]


def test_meta_build_can_be_materialised() -> None:
    reference = debug_model()
    with torch.device("meta"):
        model = LightningDiT_models["LightningDiT-Debug/1"](
            input_size=8, in_channels=4, num_classes=10
        )
    model.to_empty(device="cpu")
    model.initialize_weights()
    for key in ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin"):
        torch.testing.assert_close(model.state_dict()[key], reference.state_dict()[key])


# ---------------------------------------------------------------------------- forward behaviour


def inputs(batch: int = 2, channels: int = 4, size: int = 8):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen)
    return x, torch.rand(batch, generator=gen), torch.arange(batch) % 10


def test_learn_sigma_returns_input_channels() -> None:
    model = debug_model(learn_sigma=True).eval()
    assert model.final_layer.linear.out_features == 8
    x, t, y = inputs()
    assert model(x, t, y).shape == x.shape


def test_activation_checkpointing_is_exact_and_switchable() -> None:
    model = debug_model()
    for block in model.blocks:  # leave adaLN-Zero so that gradients reach every weight
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    x, t, y = inputs()
    model.eval()
    plain = model(x, t, y)
    plain.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    model.use_checkpoint = True
    checkpointed = model(x, t, y)
    checkpointed.square().sum().backward()
    torch.testing.assert_close(checkpointed, plain)
    for grad, p in zip(grads, (p for p in model.parameters() if p.requires_grad)):
        torch.testing.assert_close(p.grad, grad)


def test_cfg_all_channels_guides_every_channel() -> None:
    model = debug_model().eval()
    for p in model.final_layer.parameters():  # non-zero output layer
        torch.nn.init.normal_(p, std=0.1)
    x, t, _ = inputs()
    pair = torch.cat([x[:1], x[:1]])
    y = torch.tensor([3, 10])
    t = t[:1].expand(2)
    with torch.no_grad():
        raw = model(pair, t, y)
        guided = model.forward_with_cfg(pair, t, y, cfg_scale=2.0, cfg_channels=None)
        legacy = model.forward_with_cfg(pair, t, y, cfg_scale=2.0)
        off = model.forward_with_cfg(pair, t.clone().fill_(0.1), y, 2.0, cfg_interval_start=0.5)
        raw_low = model(pair, t.clone().fill_(0.1), y)
    expected = raw[1:] + 2.0 * (raw[:1] - raw[1:])
    torch.testing.assert_close(guided[:1], expected)
    torch.testing.assert_close(legacy[:1, :3], expected[:, :3])
    torch.testing.assert_close(legacy[:1, 3:], raw[:1, 3:])
    torch.testing.assert_close(off[:1], raw_low[:1])


# ---------------------------------------------------------------------------- input checks


def test_channel_mismatch_is_reported() -> None:
    model = debug_model()
    x, t, y = inputs(channels=3)
    with pytest.raises(ValueError, match=r"3 channels .* in_channels=4"):
        model(x, t, y)


def test_grid_mismatch_is_reported() -> None:
    model = debug_model()
    x, t, y = inputs(size=16)
    with pytest.raises(ValueError, match=r"16x16 does not match input_size=8"):
        model(x, t, y)


@pytest.mark.parametrize("bad_label", [11, -1])
def test_label_out_of_range_is_reported(bad_label: int) -> None:
    model = debug_model()
    x, t, _ = inputs()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\]"):
        model(x, t, torch.tensor([0, bad_label]))
    model(x, t, torch.tensor([0, 10]))  # the null class itself is valid


# ---------------------------------------------------------------------------- checkpoint loading


def test_load_released_layout_picks_entry(tmp_path: Path) -> None:
    source, ema_source = debug_model(), debug_model()
    torch.nn.init.normal_(ema_source.final_layer.linear.weight)
    path = tmp_path / "0000100.pt"
    torch.save(
        {
            # DDP-wrapped names, as train.py's "model" entry may carry.
            "model": {f"module.{k}": v for k, v in source.state_dict().items()},
            "ema": ema_source.state_dict(),
        },
        path,
    )
    target = debug_model()
    report = load_lightningdit_checkpoint(target, path)  # "ema" by default
    assert report.entry == "ema" and report.num_tensors == len(target.state_dict())
    torch.testing.assert_close(
        target.final_layer.linear.weight, ema_source.final_layer.linear.weight
    )
    load_lightningdit_checkpoint(target, path, entry="model")
    torch.testing.assert_close(target.final_layer.linear.weight, source.final_layer.linear.weight)


def test_load_bare_and_safetensors(tmp_path: Path) -> None:
    source = debug_model()
    torch.nn.init.normal_(source.final_layer.linear.weight)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    for where in (tmp_path / "w.safetensors", source.state_dict()):
        target = debug_model()
        report = load_lightningdit_checkpoint(target, where)
        assert report.entry is None
        torch.testing.assert_close(
            target.final_layer.linear.weight, source.final_layer.linear.weight
        )


def test_load_reports_keys_by_name() -> None:
    state = debug_model().state_dict()
    state.pop("feat_rope.freqs_cos")
    state["extra.weight"] = torch.zeros(1)
    state["blocks.0.attn.qkv.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError) as err:
        load_lightningdit_checkpoint(debug_model(), state)
    message = str(err.value)
    assert "missing keys (1): feat_rope.freqs_cos" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "blocks.0.attn.qkv.bias (5,) vs model (192,)" in message
