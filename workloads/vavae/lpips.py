"""Frozen VGG16 LPIPS, laid out as taming-transformers' ``LPIPS`` (the reference's perceptual loss).

Weights never download here. Pass local files: the LPIPS linear layers in the taming/
PerceptualSimilarity ``vgg.pth`` layout (``lin{k}.model.1.weight``) and the VGG16 backbone either
inside the same file (``net.slice{s}.{i}.*``, e.g. our own safetensors export or the reference's
``loss.perceptual_loss.*`` training keys) or as a torchvision ``vgg16`` state dict
(``features.{i}.*``). ``"random_init"`` builds random frozen weights for tests.
"""

from pathlib import Path

import torch
from torch import nn

from workloads.vavae.checkpoint import read_state_dict_file

RANDOM_INIT = "random_init"

# torchvision vgg16.features indices where taming cuts its five slices (after relu1_2 ... relu5_3).
SLICE_BOUNDS = (0, 4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)
# Prefix of these weights inside a reference VA-VAE training checkpoint.
TRAINING_CHECKPOINT_PREFIX = "loss.perceptual_loss."


class ScalingLayer(nn.Module):
    """Maps [-1, 1] images to the input statistics LPIPS' VGG expects."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class VGG16Slices(nn.Module):
    """torchvision VGG16 ``features`` cut into the 5 slices whose outputs LPIPS compares."""

    def __init__(self):
        super().__init__()
        # Imported here: torchvision.models pulls in torch._dynamo (~1 s), a cost every Ray
        # worker importing the tokenizer would pay even when LPIPS is off.
        from torchvision.models import vgg16

        features = vgg16(weights=None).features
        for index in range(5):
            block = nn.Sequential()
            for layer in range(SLICE_BOUNDS[index], SLICE_BOUNDS[index + 1]):
                # add_module keeps torchvision's layer index as the key (e.g. slice2.5.weight).
                block.add_module(str(layer), features[layer])
            setattr(self, f"slice{index + 1}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index in range(5):
            x = getattr(self, f"slice{index + 1}")(x)
            outputs.append(x)
        return outputs


class NetLinLayer(nn.Module):
    """1x1 conv (no bias) that weights squared feature differences per channel."""

    def __init__(self, channels: int):
        super().__init__()
        # taming puts nn.Dropout at index 0; LPIPS always runs in eval mode, where dropout is the
        # identity, so a placeholder keeps the `model.1.weight` key without the dead module.
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance per image, shape (B, 1, 1, 1); frozen and always in eval mode.

    ``weights`` is ``"random_init"`` or a path; ``backbone_weights`` optionally names a separate
    file with the VGG16 weights (torchvision layout) when ``weights`` holds only the linear layers.
    """

    def __init__(
        self, weights: str | Path = RANDOM_INIT, backbone_weights: str | Path | None = None
    ):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for index, channels in enumerate(CHANNELS):
            setattr(self, f"lin{index}", NetLinLayer(channels))
        if str(weights) != RANDOM_INIT:
            self._load(weights, backbone_weights)
        elif backbone_weights is not None:
            raise ValueError("backbone_weights needs LPIPS linear-layer weights, not random_init")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        # taming builds LPIPS().eval() and Lightning >= 2.2 keeps submodule modes (PL #18951), so
        # the reference never trains it; stay in eval even under a parent's .train().
        return super().train(False)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        features_x = self.net(self.scaling_layer(x))
        features_target = self.net(self.scaling_layer(target))
        distance = 0.0
        for index, (fx, ft) in enumerate(zip(features_x, features_target)):
            squared = (_unit_normalize(fx) - _unit_normalize(ft)) ** 2
            lin = getattr(self, f"lin{index}").model
            distance = distance + lin(squared).mean(dim=[2, 3], keepdim=True)
        return distance

    def _load(self, weights: str | Path, backbone_weights: str | Path | None) -> None:
        state_dict = _to_lpips_keys(read_state_dict_file(weights))
        if backbone_weights is not None:
            state_dict.update(_to_lpips_keys(read_state_dict_file(backbone_weights)))
        # ScalingLayer buffers are constants; files may omit them (vgg.pth does).
        state_dict.setdefault("scaling_layer.shift", self.scaling_layer.shift)
        state_dict.setdefault("scaling_layer.scale", self.scaling_layer.scale)
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        if missing:
            raise ValueError(
                f"LPIPS weights from {weights}"
                + (f" and {backbone_weights}" if backbone_weights else "")
                + f" lack {len(missing)} keys: {', '.join(missing)}"
                + (
                    " (pass the VGG16 backbone via backbone_weights)"
                    if any(k.startswith("net.") for k in missing)
                    else ""
                )
            )
        self.load_state_dict({k: state_dict[k] for k in expected}, strict=True)


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # taming's normalize_tensor: eps is added to the norm (not clamped as in F.normalize).
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)


def _to_lpips_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename known layouts to LPIPS keys: strip the training-checkpoint prefix and map
    torchvision ``features.{i}.*`` to ``net.slice{s}.{i}.*``; other keys pass through (the loader
    then takes only the LPIPS keys)."""
    renamed = {}
    for key, value in state_dict.items():
        key = key.removeprefix(TRAINING_CHECKPOINT_PREFIX)
        if key.startswith("features."):
            layer = int(key.split(".")[1])
            slice_index = next(s for s in range(5) if layer < SLICE_BOUNDS[s + 1]) + 1
            key = f"net.slice{slice_index}." + key.removeprefix("features.")
        renamed[key] = value
    return renamed
