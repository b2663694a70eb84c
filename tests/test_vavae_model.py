"""VA-VAE tokenizer: reference parity, state-dict schema, checkpoint loading, input checks."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from workloads.vavae import (
    VAVAE,
    AutoencoderKL,
    DiagonalGaussian,
    build_autoencoder,
    build_vavae,
    load_autoencoder_weights,
    vavae_presets,
)

# Public reference vectors, committed with the repo (tests/data/reference/README.md).
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(scope="module")
def tiny_reference():
    meta = json.loads((REFERENCE_DIR / "vavae_tiny_parity.json").read_text())
    tensors = load_file(REFERENCE_DIR / "vavae_tiny_parity.safetensors")
    model = AutoencoderKL(**meta["constructor_kwargs"]).eval()
    model.load_state_dict({k: tensors[k] for k in meta["weight_keys"]}, strict=True)
    return meta, tensors, model


def _close(actual, name, meta, tensors):
    tolerance = meta["tolerances"]["computed_tensors"][name]
    torch.testing.assert_close(actual, tensors[name], **tolerance)


def test_tiny_parity_every_computed_tensor(tiny_reference):
    meta, tensors, model = tiny_reference
    assert list(model.state_dict()) == meta["weight_keys"]
    captured = {}

    def capture(name):
        def hook(_module, _inputs, output):
            # Keep the first call only; returning None leaves the output untouched.
            captured.setdefault(name, output)

        return hook

    hooks = [
        model.encoder.mid.block_2.register_forward_hook(capture("inter.encoder_mid_out")),
        model.decoder.mid.block_2.register_forward_hook(capture("inter.decoder_mid_out")),
    ]
    with torch.no_grad():
        x, z = tensors["input.x"], tensors["input.z"]
        posterior = model.encode(x)
        # Decode input.z first so the decoder hook captures the z-decoding intermediate.
        decoded = model.decode(z)
        computed = {
            "output.moments": posterior.moments,
            "output.posterior_mean": posterior.mean,
            "output.posterior_logvar": posterior.logvar,
            "output.posterior_std": posterior.std,
            "output.posterior_kl": posterior.kl(),
            "output.decode": decoded,
            "output.reconstruction_from_mean": model.decode(posterior.mode()),
            "output.clamp_logvar": DiagonalGaussian(tensors["input.clamp_moments"]).logvar,
            "inter.encoder_out": model.encoder(x),
            "inter.post_quant_conv_out": model.post_quant_conv(z),
            **captured,
        }
        torch.manual_seed(3)
        computed["output.posterior_sample"] = posterior.sample()
    for hook in hooks:
        hook.remove()
    assert set(computed) == set(meta["tolerances"]["computed_tensors"])
    for name, value in computed.items():
        _close(value, name, meta, tensors)
    # The stored noise is the same draw: mean + std * noise reproduces the sample.
    from_noise = posterior.mean + posterior.std * tensors["input.sample_noise"]
    _close(from_noise, "output.posterior_sample", meta, tensors)


def test_posterior_sample_accepts_a_generator(tiny_reference):
    _, tensors, model = tiny_reference
    with torch.no_grad():
        posterior = model.encode(tensors["input.x"])
    first = posterior.sample(torch.Generator().manual_seed(7))
    second = posterior.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, second)
    assert not torch.equal(first, posterior.mode())


def test_f16d32_matches_released_schema():
    schema = json.loads((REFERENCE_DIR / "vavae_f16d32_schema.json").read_text())
    inference = schema["inference_model"]
    with torch.device("meta"):
        model = build_autoencoder("f16d32")
    ours = {
        key: (list(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    }
    reference = {
        entry["key"]: (entry["shape"], entry["dtype"]) for entry in inference["state_dict"]
    }
    assert ours == reference
    assert len(ours) == inference["num_state_dict_entries"] == 342
    assert sum(v.numel() for v in model.state_dict().values()) == 69_836_067
    assert model.downsample_factor == 16


def test_training_model_keys_match_reference_training_groups():
    schema = json.loads((REFERENCE_DIR / "vavae_f16d32_schema.json").read_text())
    kept_groups = {"inference", "training_only:vf_projection", "training_only:loss(other)"}
    reference = {
        entry["key"]: entry["shape"]
        for entry in schema["training_model"]["state_dict"]
        if entry["group"] in kept_groups or entry["key"].startswith("loss.discriminator.")
    }
    with torch.device("meta"):
        model = build_vavae("f16d32", vf_feature_dim=1024)
    assert {key: list(v.shape) for key, v in model.state_dict().items()} == reference
    exported = model.export_inference_state_dict()
    assert set(exported) == {e["key"] for e in schema["inference_model"]["state_dict"]}


def test_presets_and_downsampling_factors():
    assert {"f16d16", "f16d32", "f16d64", "tiny", "micro"} <= set(vavae_presets)
    factors = {}
    for name in vavae_presets:
        with torch.device("meta"):
            factors[name] = build_autoencoder(name).downsample_factor
    assert factors == {"f16d16": 16, "f16d32": 16, "f16d64": 16, "tiny": 4, "micro": 2}
    with torch.device("meta"):
        assert build_autoencoder("f16d32", embed_dim=16).quant_conv.out_channels == 32
    with pytest.raises(ValueError, match="unknown VA-VAE preset"):
        build_autoencoder("f8d4")


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_non_square_round_trip_shapes(preset):
    torch.manual_seed(0)
    model = build_autoencoder(preset).eval()
    f = model.downsample_factor
    x = torch.rand(2, 3, 8 * f, 12 * f) * 2 - 1
    with torch.no_grad():
        posterior = model.encode(x)
        assert posterior.mean.shape == (2, model.embed_dim, 8, 12)
        assert model.decode(posterior.sample()).shape == x.shape


def test_unsupported_input_fails_clearly():
    model = build_autoencoder("micro")
    ok = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model.encode(ok[:, :1])
    with pytest.raises(ValueError, match=r"looks like \[0, 255\] input"):
        model.encode(ok + 255.0)
    with pytest.raises(ValueError, match="not divisible by the tokenizer's downsampling factor 2"):
        model.encode(torch.zeros(1, 3, 32, 33))
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.zeros(3, 32, 32))


@pytest.fixture()
def micro_pair():
    torch.manual_seed(1)
    source = build_vavae("micro", vf_feature_dim=16).eval()
    target = build_autoencoder("micro").eval()
    return source, target


def test_checkpoint_loads_inference_keys_from_training_file(tmp_path, micro_pair):
    source, target = micro_pair
    # A Lightning-style training checkpoint: wrapper, projection, loss and foundation keys.
    training_sd = dict(source.state_dict())
    training_sd["foundation_model.model.cls_token"] = torch.zeros(1, 1, 8)
    training_sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    torch.save({"state_dict": training_sd, "global_step": 10}, tmp_path / "train.ckpt")
    load_autoencoder_weights(target, tmp_path / "train.ckpt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(target.encode(x).mean, source.encode(x).mean)

    save_file(source.export_inference_state_dict(), tmp_path / "export.safetensors")
    fresh = build_autoencoder("micro").eval()
    load_autoencoder_weights(fresh, tmp_path / "export.safetensors")
    torch.save(source.export_inference_state_dict(), tmp_path / "plain.pt")
    load_autoencoder_weights(fresh, tmp_path / "plain.pt")
    exported = source.to_autoencoder()
    with torch.no_grad():
        latent = source.encode(x).mean
        torch.testing.assert_close(fresh.decode(latent), source.decode(latent))
        torch.testing.assert_close(exported.decode(latent), source.decode(latent))


def test_checkpoint_errors_name_the_keys(tmp_path, micro_pair):
    source, target = micro_pair
    state = source.export_inference_state_dict()
    state.pop("decoder.conv_out.bias")
    state["encoder.down.0.block.7.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        load_autoencoder_weights(target, state)
    message = str(error.value)
    assert "missing (1): decoder.conv_out.bias" in message
    assert "unexpected (1): encoder.down.0.block.7.conv1.weight" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_autoencoder_weights(target, tmp_path / "nowhere.pt")
    wrong = build_autoencoder("micro", embed_dim=8).state_dict()
    with pytest.raises(ValueError, match="shape mismatch"):
        load_autoencoder_weights(target, wrong)


def test_training_weights_round_trip(tmp_path, micro_pair):
    source, _ = micro_pair
    torch.save({"state_dict": source.state_dict()}, tmp_path / "vavae.ckpt")
    resumed = VAVAE(vf_feature_dim=16, **vavae_presets["micro"])
    resumed.load_training_weights(tmp_path / "vavae.ckpt")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)
    no_projection = VAVAE(vf_feature_dim=None, **vavae_presets["micro"])
    with pytest.raises(ValueError, match="unexpected \\(1\\): linear_proj.weight"):
        no_projection.load_training_weights(tmp_path / "vavae.ckpt")
