"""FD_DINOv2 as dgm-eval / EDM2 compute it: CLS token of the final norm, ImageNet-normalised input
resized bicubically (antialiased) to 224 px; wrong weights are one line naming the file.
Small random-init ViTs stand in for ViT-L/14 (the computation is tested, not the weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from workloads.metrics.fd_dinov2 import DINOv2Features, check_dinov2_weights
from workloads.metrics.frechet import fid_from_features

SMALL_DINOV2 = "vit_small_patch14_dinov2"


@pytest.fixture(scope="module")
def features() -> DINOv2Features:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return DINOv2Features("random_init", timm_name=SMALL_DINOV2)


def test_features_are_the_cls_token_of_imagenet_normalised_224px_input(features):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    out = features(images)
    assert out.shape == (3, features.backbone.model.embed_dim)
    # The protocol spelled out: 0..255 -> bicubic antialiased 224 -> /255 -> ImageNet mean/std.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(224, 224), mode="bicubic", antialias=True) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tokens = features.backbone.model.forward_features((x - mean) / std)
    torch.testing.assert_close(out, tokens[:, 0])
    # The same images as [-1, 1] floats (decoder output) give the same features.
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.testing.assert_close(features(as_float), out, atol=1e-4, rtol=1e-4)


def test_fd_of_a_set_with_itself_is_zero(features):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    f = features(images).double().numpy()
    assert abs(fid_from_features(f, f)) < 1e-6


def test_weights_of_another_architecture_are_one_line_naming_the_file(tmp_path):
    import timm

    wrong = tmp_path / "mae_vit_b16.safetensors"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file(model.state_dict(), str(wrong))
    with pytest.raises(ValueError, match=r"mae_vit_b16.safetensors: not DINOv2 ViT-L/14") as error:
        check_dinov2_weights(wrong)
    assert "\n" not in str(error.value) and "cls_token is (1, 1, 192)" in str(error.value)
    # Loading it into the network fails the same way: one line naming the file.
    with pytest.raises(ValueError, match=r"mae_vit_b16.safetensors is not a state dict") as error:
        DINOv2Features(str(wrong), timm_name=SMALL_DINOV2)
    assert "\n" not in str(error.value)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable weights file"):
        check_dinov2_weights(tmp_path / "junk.safetensors")
