"""RAE: the frozen DINOv2-style encoder (token drop, non-affine norm, bicubic resize), the ViT
decoder, the family's noised-latent view, the frozen encoder as buffers, the export round trip
and one step of the shared objective. Tiny random-init timm models, no mocks, seconds."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from workloads.families import get_family
from workloads.families.rae import NOISE_TAU
from workloads.foundation import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, FoundationModel
from workloads.rae import RAE, PointPosterior, RAETrainingModel, ViTDecoder
from workloads.vavae import VAVAEObjective, build_vavae, load_autoencoder_weights

ENCODER_NAME = "vit_small_patch14_reg4_dinov2"  # DINOv2 with 4 registers, as RAE's DINOv2-B
ENCODER_KWARGS = {"img_size": 56, "patch_size": 14, "embed_dim": 32, "depth": 2, "num_heads": 2}
ENCODER = {"timm_name": ENCODER_NAME, "timm_kwargs": ENCODER_KWARGS, "input_norm": "imagenet"}
GRID, PATCH = 4, 8  # a 4 x 4 latent of 32 px images (a 2-layer PatchGAN needs that much)
DECODER = {"patch_size": PATCH, "width": 32, "depth": 2, "heads": 2, "mlp_dim": 48}
KWARGS = {"encoder": ENCODER, "grid": GRID, "decoder": DECODER, "embed_dim": 32}
MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN)[None, :, None, None]
STD = torch.tensor(IMAGENET_DEFAULT_STD)[None, :, None, None]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **kwargs) -> RAETrainingModel:
    torch.manual_seed(seed)
    return get_family("rae").training_model(
        KWARGS, vf_feature_dim=None, disc_ndf=8, disc_layers=2, **kwargs
    )


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return (
        torch.rand(
            batch, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(seed)
        )
        * 2
        - 1
    )


def test_family_is_registered():
    family = get_family("rae")
    assert family.name == "rae" and family.frozen_encoder and family.adaptive_gan
    assert not family.uses_vf_loss
    assert NOISE_TAU == 0.8


def test_encoder_drops_prefix_tokens_and_normalises_without_affine():
    model = tiny_model()
    encoder = model.encoder
    assert encoder.model.num_prefix_tokens == 5  # CLS + 4 registers
    norm = encoder.model.norm
    assert isinstance(norm, nn.LayerNorm) and not norm.elementwise_affine and norm.eps == 1e-6
    x = images()
    posterior = model.encode(x)
    assert isinstance(posterior, PointPosterior)
    assert posterior.mean.shape == (2, 32, GRID, GRID) and not posterior.mean.requires_grad

    # The same timm model with an affine final norm (random weight and bias, which RAE drops).
    reference = timm.create_model(
        ENCODER_NAME, num_classes=0, dynamic_img_size=True, **ENCODER_KWARGS
    )
    weights = {
        key.removeprefix("encoder.model."): value
        for key, value in model.state_dict().items()
        if key.startswith("encoder.model.")
    }
    missing, unexpected = reference.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["norm.bias", "norm.weight"] and not unexpected
    with torch.no_grad():
        reference.norm.weight.normal_()
        reference.norm.bias.normal_()
        eps = reference.norm.eps
        reference.norm = nn.Identity()
        # Bicubic to grid x patch (4 x 14 = 56 px), then ImageNet normalisation of [0, 1].
        resized = F.interpolate(x, size=(56, 56), mode="bicubic", align_corners=False)
        tokens = reference.forward_features(((resized + 1) / 2 - MEAN) / STD)
    assert tokens.shape[1] == 5 + GRID * GRID
    expected = F.layer_norm(tokens[:, 5:], (32,), eps=eps)  # no weight, no bias
    torch.testing.assert_close(posterior.mean, expected.transpose(1, 2).reshape(2, 32, GRID, GRID))
    # Every latent cell (a token) has zero mean and unit variance over its channels.
    cells = posterior.mean.flatten(2)
    torch.testing.assert_close(cells.mean(1), torch.zeros(2, GRID * GRID), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        cells.var(1, unbiased=False), torch.ones(2, GRID * GRID), atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match="this RAE encodes 32x32 images"):
        model.encode(torch.zeros(1, 3, 64, 64))


def test_foundation_resize_and_affine_options(tmp_path):
    kwargs = {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    source = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, dynamic_img_size=True, **kwargs
    )
    with torch.no_grad():
        source.norm.weight.normal_()
        source.norm.bias.normal_()
    save_file(source.state_dict(), tmp_path / "vit.safetensors")  # holds norm.weight / bias
    default = FoundationModel("vit_tiny_patch16_224", str(tmp_path / "vit.safetensors"), kwargs)
    assert (default.resize, default.affine_norm) == ("bilinear", True)
    plain = FoundationModel(
        "vit_tiny_patch16_224",
        str(tmp_path / "vit.safetensors"),
        kwargs,
        resize="bicubic",
        affine_norm=False,
    )
    x = torch.rand(1, 3, 24, 24) * 2 - 1
    with torch.no_grad():
        source.norm = nn.Identity()
        resized = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False)
        tokens = source.forward_features(resized)[:, 1:]
    expected = F.layer_norm(tokens, (16,), eps=1e-6).transpose(1, 2).reshape(1, 16, 4, 4)
    torch.testing.assert_close(plain(x, (4, 4)), expected)
    with pytest.raises(ValueError, match="resize must be one of"):
        FoundationModel("vit_tiny_patch16_224", "random_init", kwargs, resize="nearest")
    with pytest.raises(ValueError, match="affine_norm=False needs a final LayerNorm"):
        # Average pooling with timm's default fc_norm moves the final norm after the pooling.
        FoundationModel(
            "vit_tiny_patch16_224",
            "random_init",
            {**kwargs, "global_pool": "avg"},
            affine_norm=False,
        )


def test_decoder_shape_range_and_patch_order():
    torch.manual_seed(0)
    grid, patch = 2, 3
    decoder = ViTDecoder(8, grid, patch_size=patch, width=16, depth=1, heads=2, mlp_dim=24)
    assert decoder.decoder_layers[0].mlp.fc1.out_features == 24
    assert decoder.last_layer is decoder.decoder_pred.weight
    with torch.no_grad():
        decoder.decoder_pred.weight.zero_()
        # Output channel (row p, column q, colour c) of every token predicts (p * 3 + q) * 3 + c.
        decoder.decoder_pred.bias.copy_(torch.arange(patch * patch * 3) / 27.0)
        out = decoder(torch.randn(2, 8, grid, grid))
    assert out.shape == (2, 3, grid * patch, grid * patch)
    p, q = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    normalised = torch.stack([(p * patch + q) * 3 + c for c in range(3)]) / 27.0
    x01 = normalised.repeat(1, grid, grid)[None] * STD + MEAN  # de-normalised to [0, 1]
    torch.testing.assert_close(out, (2 * x01 - 1).expand(2, -1, -1, -1))
    # MAE's sin-cos table: 0 at the CLS position; first half of the channels the column, second
    # half the row (token (r, c) sits at 1 + r * grid + c).
    table = decoder.decoder_pos_embed[0]
    assert torch.equal(table[0], torch.zeros(16))
    half = slice(0, 8), slice(8, 16)
    assert torch.equal(table[1 + 1, half[1]], table[1, half[1]])  # same row
    assert not torch.equal(table[1 + 1, half[0]], table[1, half[0]])
    assert torch.equal(table[1 + grid, half[0]], table[1, half[0]])  # same column
    torch.testing.assert_close(table[1, half[0]], torch.tensor([0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match=r"takes \(B, C, 2, 2\) latents"):
        decoder(torch.zeros(1, 8, 3, 3))


def test_paper_configuration_shapes():
    # DINOv2-B/14 with 4 registers and the ViT-XL decoder, on the meta device (no weights).
    paper = {"timm_name": "vit_base_patch14_reg4_dinov2.lvd142m", "timm_kwargs": {}}
    with torch.device("meta"):
        rae = RAE({**paper, "input_norm": "imagenet"}, grid=16, decoder={}, embed_dim=768)
        latent = rae.encoder(torch.empty(1, 3, 256, 256), grid=(16, 16))
        image = rae.decode(torch.empty(1, 768, 16, 16))
    assert rae.encoder.patch_size == (14, 14) and rae.encoder.model.num_prefix_tokens == 5
    assert latent.shape == (1, 768, 16, 16) and image.shape == (1, 3, 256, 256)
    assert rae.downsample_factor == 16 and len(rae.decoder.decoder_layers) == 28
    block = rae.decoder.decoder_layers[0]
    assert (block.mlp.fc1.in_features, block.mlp.fc1.out_features) == (1152, 4096)
    assert block.attn.num_heads == 16 and block.norm1.eps == 1e-12
    with (
        torch.device("meta"),
        pytest.raises(
            ValueError,
            match="RAE encoder vit_base_patch14_reg4_dinov2.lvd142m gives 768 channels but "
            "embed_dim is 1024",
        ),
    ):
        RAE({**paper, "input_norm": "imagenet"}, grid=16, decoder={}, embed_dim=1024)


def test_point_posterior():
    mean = torch.randn(3, 4, 2, 2)
    posterior = PointPosterior(mean)
    assert posterior.sample(torch.Generator().manual_seed(0)) is mean
    assert posterior.mode() is mean
    assert torch.equal(posterior.kl(), torch.zeros(3))
    assert torch.equal(posterior.std, torch.zeros_like(mean))


def test_view_decodes_the_noised_latent_and_the_decoder_stage_the_clean_one():
    model, family = tiny_model(), get_family("rae")
    x = images()
    with torch.no_grad():
        view = family.training_view(model, x, torch.Generator().manual_seed(3))
        z = model.encode(x).mean
        # The view's draws, in its order: sigma / tau ~ U(0, 1) per sample, then eps ~ N(0, I).
        rng = torch.Generator().manual_seed(3)
        sigma = NOISE_TAU * torch.rand((2,), generator=rng)
        eps = torch.randn(z.shape, generator=rng)
        expected = model.decode(z + sigma.view(-1, 1, 1, 1) * eps)
        clean = model.decode(z)
        plain = family.view(model, x, torch.Generator().manual_seed(3), decoder_only=True)
    assert ((sigma >= 0) & (sigma <= NOISE_TAU)).all()
    torch.testing.assert_close(view.reconstruction, expected)
    assert not torch.allclose(view.reconstruction, clean)
    assert torch.equal(view.latent, z) and view.target is x and view.z_proj is None
    assert torch.equal(view.posterior.kl(), torch.zeros(2))
    torch.testing.assert_close(plain.reconstruction, clean)


def test_encoder_is_frozen_buffers_in_eval_mode():
    model = tiny_model()
    assert list(model.encoder.parameters()) == []
    assert all(name.startswith(("decoder.", "loss.")) for name, _ in model.named_parameters())
    decoder = {id(p) for p in model.decoder.parameters()}
    assert {id(p) for p in model.generator_parameters()} == decoder
    keys = set(model.state_dict())
    for key in ("cls_token", "reg_token", "pos_embed", "blocks.0.attn.qkv.weight"):
        assert f"encoder.model.{key}" in keys  # checkpoints carry the encoder
    assert "encoder.model.norm.weight" not in keys
    model.train()
    assert not model.encoder.training and not model.encoder.model.training
    assert model.decoder.training


def test_export_loads_strictly_into_a_fresh_rae():
    model = tiny_model(seed=0)
    exported = model.export_inference_state_dict()
    torch.manual_seed(1)
    fresh = RAE(**model.config)
    assert set(exported) == set(fresh.state_dict())
    assert not any(value.requires_grad for value in exported.values())
    x = images()
    z = model.encode(x).mean
    assert not torch.allclose(fresh.encode(x).mean, z)  # other random weights before loading
    fresh.load_state_dict(exported, strict=True)
    torch.testing.assert_close(fresh.encode(x).mean, z, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fresh.decode(z), model.decode(z), rtol=0, atol=0)
    # The loader every stage uses (`TokenizerSpec.build`): the whole training state loads its
    # inference keys strictly; a VAE's weights are refused with the file named.
    other = RAE(**model.config)
    load_autoencoder_weights(other, model.state_dict())
    torch.testing.assert_close(other.encode(x).mean, z, rtol=0, atol=0)
    vavae = build_vavae("tiny", vf_feature_dim=None).state_dict()
    with pytest.raises(ValueError, match="cannot load .* into RAE"):
        load_autoencoder_weights(other, vavae)


def test_a_built_encoder_is_used_and_checked():
    torch.manual_seed(5)
    built = FoundationModel(
        ENCODER_NAME,
        "random_init",
        ENCODER_KWARGS,
        input_norm="imagenet",
        resize="bicubic",
        affine_norm=False,
    )
    model = tiny_model(encoder=built)
    assert model.encoder is built and list(built.parameters()) == []
    bilinear = FoundationModel(ENCODER_NAME, "random_init", ENCODER_KWARGS, input_norm="imagenet")
    with pytest.raises(ValueError, match=r"resize 'bilinear' \(expected 'bicubic'\); affine_norm"):
        tiny_model(encoder=bilinear)


def test_one_objective_step_trains_only_decoder_and_discriminator():
    model = tiny_model()
    objective = VAVAEObjective(
        None, None, use_vf=False, perceptual_weight=0.0, disc_start=0, family=get_family("rae")
    )
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    loss, terms = objective(model, images(), 1, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and terms["kl"] == 0 and terms["d_weight"] > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    assert model.decoder.last_layer.grad.abs().sum() > 0
    assert next(model.discriminator_parameters()).grad.abs().sum() > 0
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]) and value.grad is None, key
