"""Frozen foundation models: feature grid, resize rule, local weights, errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from workloads.foundation import (
    FOUNDATION_PRESETS,
    FoundationModel,
    build_foundation,
    foundation_input_size,
)

TINY_VIT = "vit_tiny_patch16_224"
TINY_KWARGS = {"img_size": 32, "patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_foundation(TINY_VIT, "random_init", timm_kwargs=TINY_KWARGS)


def test_presets_are_the_reference_models():
    assert FOUNDATION_PRESETS["dinov2"][0] == "vit_large_patch14_dinov2.lvd142m"
    assert FOUNDATION_PRESETS["mae"][0] == "vit_large_patch16_224.mae"


def test_resize_rule_comes_from_patch_size():
    # Built on the meta device: ViT-L shapes without allocating 300M parameters.
    with torch.device("meta"):
        dinov2 = build_foundation("dinov2", "random_init")
        mae = build_foundation("mae", "random_init")
    assert (dinov2.patch_size, dinov2.embed_dim) == ((14, 14), 1024)
    assert foundation_input_size(dinov2.patch_size, (16, 16)) == (224, 224)
    assert foundation_input_size(mae.patch_size, (16, 16)) == (256, 256)
    features = dinov2(torch.empty(2, 3, 256, 256, device="meta"), grid=(16, 16))
    assert features.shape == (2, 1024, 16, 16)


@pytest.mark.parametrize(
    "image, grid", [((32, 32), (8, 8)), ((32, 32), (4, 4)), ((24, 40), (6, 10))]
)
def test_feature_map_has_the_requested_grid(tiny, image, grid):
    x = torch.rand(2, 3, *image) * 2 - 1
    features = tiny(x, grid=grid)
    assert features.shape == (2, tiny.embed_dim, *grid)
    assert not features.requires_grad


def test_features_are_final_norm_patch_tokens_without_cls(tiny):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        tokens = tiny.model.forward_features(x)[:, 1:]
    features = tiny(x, grid=(8, 8))
    # Token (row 2, col 5) sits at index 2 * 8 + 5 of the row-major sequence.
    torch.testing.assert_close(features[0, :, 2, 5], tokens[0, 2 * 8 + 5])


def test_frozen_and_eval(tiny):
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.model.training


def test_imagenet_input_norm(tiny):
    other = FoundationModel(TINY_VIT, "random_init", TINY_KWARGS, input_norm="imagenet")
    other.model.load_state_dict(tiny.model.state_dict())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    torch.testing.assert_close(other(x, (8, 8)), tiny(((x + 1) / 2 - mean) / std, (8, 8)))
    with pytest.raises(ValueError, match="input_norm"):
        FoundationModel(TINY_VIT, "random_init", TINY_KWARGS, input_norm="zscore")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_round_trip(tmp_path, tiny, suffix):
    # A file saved from a model *with* a classifier head: the head is dropped on load.
    torch.manual_seed(1)
    source = timm.create_model(TINY_VIT, pretrained=False, num_classes=10, **TINY_KWARGS)
    path = tmp_path / f"standin{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_foundation(TINY_VIT, str(path), timm_kwargs=TINY_KWARGS)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = source.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, -1, 8, 8)
    torch.testing.assert_close(loaded(x, (8, 8)), expected)


def test_missing_or_mismatched_weights_fail_clearly(tmp_path, tiny):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        build_foundation(TINY_VIT, str(missing), timm_kwargs=TINY_KWARGS)
    save_file(tiny.model.state_dict(), tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="check timm_kwargs"):
        build_foundation(
            TINY_VIT, str(tmp_path / "tiny.safetensors"), timm_kwargs={**TINY_KWARGS, "depth": 3}
        )


def test_unreachable_grid_fails_clearly(tiny):
    fixed = FoundationModel(TINY_VIT, "random_init", {**TINY_KWARGS, "dynamic_img_size": False})
    x = torch.zeros(1, 3, 32, 32)
    assert fixed(x, (8, 8)).shape == (1, 48, 8, 8)
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        fixed(x, (4, 4))
    with pytest.raises(ValueError, match="grid must be positive"):
        tiny(x, (0, 4))


@pytest.mark.parametrize(
    "name, channels",
    # Paper Tab. 4's other foundation models (search_spaces/paper_table4.yaml): SAM's image
    # encoder answers with its neck's 256-channel map, CLIP with its final-norm patch tokens.
    [("samvit_large_patch16.sa1b", 256), ("vit_base_patch16_clip_224.openai", 768)],
)
def test_table4_foundations_give_the_f16_grid(name, channels):
    with torch.device("meta"):
        model = build_foundation(name, "random_init")
    assert model.patch_size == (16, 16) and model.embed_dim == channels
    features = model(torch.empty(2, 3, 256, 256, device="meta"), grid=(16, 16))
    assert features.shape == (2, channels, 16, 16)


def test_sam_features_are_its_neck_map():
    kwargs = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
    kwargs |= {"window_size": 4, "global_attn_indexes": (1,), "neck_chans": 16}
    torch.manual_seed(0)
    sam = build_foundation("samvit_base_patch16", "random_init", timm_kwargs=kwargs)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = sam.model.forward_features(x)
    torch.testing.assert_close(sam(x, grid=(8, 8)), expected)
    assert sam.embed_dim == 16
