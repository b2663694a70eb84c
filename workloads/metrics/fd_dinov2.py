"""FD_DINOv2 features as dgm-eval and EDM2 compute them.

uint8 RGB images are resized to 224 x 224 with bicubic, antialiased interpolation (EDM2's
``resize_mode='torch'``, its fast equivalent of dgm-eval's PIL bicubic resize), scaled to [0, 1],
normalised with the ImageNet mean and std, and passed through DINOv2 ViT-L/14; the feature is
the final-norm CLS token (1024-d), the output of the hub model's forward. The Fréchet distance of
two such feature sets is FD_DINOv2 (``frechet.fid_from_features``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workloads.foundation import FOUNDATION_PRESETS, FoundationModel
from workloads.metrics.images import as_nchw_tensor, to_uint8

INPUT_SIZE = 224
DINOV2_VITL14 = FOUNDATION_PRESETS["dinov2"][0]


class DINOv2Features(nn.Module):
    """Frozen DINOv2 ViT-L/14 mapping images to FD_DINOv2 features (B, 1024).

    ``weights``: ``"hub"`` (timm download), a local state-dict file of the same architecture
    (a file of another architecture is refused with one line naming it), or ``"random_init"``
    (tests). ``timm_name`` exists for tests that need a smaller ViT; the metric is ViT-L/14.
    """

    def __init__(self, weights: str, timm_name: str = DINOV2_VITL14):
        super().__init__()
        try:
            self.backbone = FoundationModel(timm_name, weights=weights, input_norm="imagenet")
        except ValueError as error:
            raise ValueError(f"FD_DINOv2 weights: {error}") from None
        self.eval()

    def train(self, mode: bool = True) -> DINOv2Features:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, 3, H, W) uint8 or [-1, 1] floats, or (B, H, W, 3) uint8 arrays -> (B, D) CLS."""
        mean, std = self.backbone.imagenet_mean, self.backbone.imagenet_std
        x = to_uint8(as_nchw_tensor(images)).to(mean.device).float()
        # Resize the 0..255 values, as EDM2 does, before scaling and normalising.
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True)
        x = (x / 255.0 - mean) / std
        model = self.backbone.model
        return model.forward_features(x.to(model.patch_embed.proj.weight.dtype))[:, 0].float()


# Tensors whose shapes identify DINOv2 ViT-L/14 (1024-d tokens, 14 px patches, one CLS token).
VITL14_SIGNATURE = {"cls_token": (1, 1, 1024), "patch_embed.proj.weight": (1024, 3, 14, 14)}


def check_dinov2_weights(path: Path) -> None:
    """One-line ValueError naming `path` unless it is a DINOv2 ViT-L/14 state dict (checked on
    the signature tensors before a 300M-parameter network is built)."""
    from workloads.foundation import TRAINING_CHECKPOINT_PREFIX
    from workloads.vavae.checkpoint import read_state_dict_file

    try:
        state = read_state_dict_file(path)
    except Exception as error:  # safetensors raises its own error type for a corrupt header
        raise ValueError(f"{path}: not a readable weights file ({error})") from None
    state = {k.removeprefix(TRAINING_CHECKPOINT_PREFIX): v for k, v in state.items()}
    for key, shape in VITL14_SIGNATURE.items():
        found = tuple(state[key].shape) if key in state else None
        if found != shape:
            raise ValueError(
                f"{path}: not DINOv2 ViT-L/14 weights (FD_DINOv2 needs them): {key} is "
                f"{'missing' if found is None else found}, expected {shape}"
            )
