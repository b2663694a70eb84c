"""Frozen vision foundation models (timm ViTs) that supply the VF-loss target features.

The reference (``vavae/ldm/models/foundation_models.py``) hard-codes DINOv2-L/14 at 224 px and
MAE-L/16 at 256 px, both giving a 16x16 token grid that equals the f16 latent grid. Here any timm
ViT works: the input is resized to ``grid * patch_size`` so the patch tokens land on the requested
latent grid (256 px -> 224 px for DINOv2, no resize for MAE, as in the reference).
"""

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workloads.vavae.checkpoint import read_state_dict_file

HUB = "hub"
RANDOM_INIT = "random_init"
INPUT_NORMS = ("minus_one_one", "imagenet")
# F.interpolate modes for resizing the input to the token grid: VA-VAE's bilinear, RAE's bicubic.
RESIZE_MODES = ("bilinear", "bicubic")

# ImageNet normalisation (timm.data's IMAGENET_DEFAULT_MEAN / _STD).
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

# name -> (timm model name, timm kwargs). The reference loads both from the timm HF hub with
# dynamic_img_size=True, which FoundationModel always adds.
FOUNDATION_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "dinov2": ("vit_large_patch14_dinov2.lvd142m", {}),
    "mae": ("vit_large_patch16_224.mae", {}),
}

# The reference's VA-VAE training checkpoints store the foundation model under this prefix.
TRAINING_CHECKPOINT_PREFIX = "foundation_model.model."


def foundation_input_size(patch_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """Input (H, W) at which a ViT with ``patch_size`` yields a ``grid`` of patch tokens."""
    return grid[0] * patch_size[0], grid[1] * patch_size[1]


class FoundationModel(nn.Module):
    """A frozen timm ViT returning its final-norm patch tokens as a (B, C, h, w) feature map.

    ``weights``: ``"hub"`` (timm pretrained download; needs network), a local ``.safetensors`` /
    ``.pt`` state dict of the same timm architecture, or ``"random_init"`` (tests).
    ``input_norm``: ``"minus_one_one"`` feeds the [-1, 1] image unchanged, reproducing the
    reference (the author calls the missing ImageNet normalisation "a small bug", upstream issue
    #78); ``"imagenet"`` maps [-1, 1] to ImageNet mean/std normalised input instead.
    ``resize``: the interpolation that brings the image to ``grid * patch_size`` (``"bilinear"``,
    VA-VAE's; ``"bicubic"``, RAE's). ``affine_norm=False`` drops the final LayerNorm's weight and
    bias (RAE's encoder), so every patch token has zero mean and unit variance over channels.
    """

    def __init__(
        self,
        timm_name: str,
        weights: str = HUB,
        timm_kwargs: dict | None = None,
        input_norm: str = "minus_one_one",
        resize: str = "bilinear",
        affine_norm: bool = True,
    ):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        local_file = weights not in (HUB, RANDOM_INIT)
        if local_file and not Path(weights).is_file():
            raise FileNotFoundError(f"foundation model weights file not found: {weights}")
        self.timm_name = timm_name
        # SAM's image encoder (timm `samvit_*`, paper Tab. 4) resamples its position embedding to
        # any input by itself and returns a (B, C, h, w) map from its neck: it takes no
        # `dynamic_img_size` and has no prefix tokens.
        self.spatial_output = timm_name.startswith("samvit")
        dynamic = {} if self.spatial_output else {"dynamic_img_size": True}
        kwargs = {**dynamic, **(timm_kwargs or {})}
        import timm  # here, not at module import: timm pulls in torchvision and torch._dynamo

        self.model = timm.create_model(
            timm_name, pretrained=weights == HUB, num_classes=0, **kwargs
        )
        if local_file:
            self._load_local(Path(weights))
        if not affine_norm:
            # After loading, so pretrained files (which hold norm.weight/bias) still load strictly.
            self._drop_norm_affine()
        self.input_norm = input_norm
        self.resize = resize
        self.affine_norm = affine_norm
        # Channels of the feature map: SAM's neck projects its tokens to `num_features`.
        self.embed_dim = self.model.num_features if self.spatial_output else self.model.embed_dim
        self.patch_size = tuple(self.model.patch_embed.patch_size)
        self.register_buffer(
            "imagenet_mean",
            torch.tensor(IMAGENET_DEFAULT_MEAN)[None, :, None, None],
            persistent=False,
        )
        self.register_buffer(
            "imagenet_std",
            torch.tensor(IMAGENET_DEFAULT_STD)[None, :, None, None],
            persistent=False,
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FoundationModel":
        # Frozen feature extractor: never leave eval mode, even under a parent's .train().
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> features (B, embed_dim, grid[0], grid[1])."""
        grid = (int(grid[0]), int(grid[1]))
        if min(grid) < 1:
            raise ValueError(f"feature grid must be positive, got {grid}")
        size = foundation_input_size(self.patch_size, grid)
        fixed_size = not (self.spatial_output or self.model.dynamic_img_size)
        if fixed_size and tuple(self.model.patch_embed.grid_size) != grid:
            raise ValueError(
                f"{self.timm_name} with a fixed image size only produces a "
                f"{tuple(self.model.patch_embed.grid_size)} grid, not {grid}; build it with "
                "dynamic_img_size=True"
            )
        if tuple(x.shape[-2:]) != size:
            # align_corners=False, no antialias: VA-VAE's bilinear 256 -> 224 resize, and RAE's
            # bicubic one (bytetriper/RAE@a4d18c4 src/stage1/rae.py `encode`).
            x = F.interpolate(x, size=size, mode=self.resize, align_corners=False)
        if self.input_norm == "imagenet":
            x = ((x + 1.0) / 2.0 - self.imagenet_mean) / self.imagenet_std
        x = x.to(self.model.patch_embed.proj.weight.dtype)
        if self.spatial_output:
            return self.model.forward_features(x)
        # forward_features applies the final norm; drop CLS (and any register) tokens.
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid)

    def _drop_norm_affine(self) -> None:
        """Replace the final LayerNorm by one without weight and bias, same eps (RAE's
        `Dinov2withNorm(normalize=True)`, bytetriper/RAE@a4d18c4 src/stage1/encoders/dinov2.py)."""
        norm = getattr(self.model, "norm", None)
        if not isinstance(norm, nn.LayerNorm):
            raise ValueError(
                f"affine_norm=False needs a final LayerNorm `norm` on the patch tokens; "
                f"{self.timm_name} has {type(norm).__name__}"
            )
        self.model.norm = nn.LayerNorm(
            norm.normalized_shape, eps=norm.eps, elementwise_affine=False
        )

    def _load_local(self, path: Path) -> None:
        state_dict = read_state_dict_file(path)
        if any(key.startswith(TRAINING_CHECKPOINT_PREFIX) for key in state_dict):
            state_dict = {
                key.removeprefix(TRAINING_CHECKPOINT_PREFIX): value
                for key, value in state_dict.items()
                if key.startswith(TRAINING_CHECKPOINT_PREFIX)
            }
        expected = self.model.state_dict()
        if not any(key.startswith("head.") for key in expected):
            # Built with num_classes=0: a classifier head in the file is irrelevant.
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        mis_shaped = sorted(
            f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in state_dict.items()
            if k in expected and v.shape != expected[k].shape
        )
        if missing or unexpected or mis_shaped:
            # One line: counts and the first few keys (a ViT-L has hundreds).
            parts = [
                f"{len(keys)} {what} (e.g. {', '.join(keys[:2])})"
                for what, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("mis-shaped", mis_shaped),
                )
                if keys
            ]
            raise ValueError(
                f"{path} is not a state dict of timm model {self.timm_name} (wrong architecture? "
                f"check timm_kwargs): {'; '.join(parts)} keys"
            )
        self.model.load_state_dict(state_dict, strict=True)


def foundation_timm(name_or_timm_name: str) -> tuple[str, dict[str, Any]]:
    """(timm name, timm kwargs) of a preset (``"dinov2"``, ``"mae"``) or of any timm ViT name."""
    return FOUNDATION_PRESETS.get(name_or_timm_name, (name_or_timm_name, {}))


def build_foundation(
    name_or_timm_name: str,
    weights: str,
    input_norm: str = "minus_one_one",
    timm_kwargs: dict | None = None,
) -> FoundationModel:
    """Build a preset (``"dinov2"``, ``"mae"``) or any timm ViT by name; ``timm_kwargs`` extend or
    override the preset's kwargs."""
    timm_name, preset_kwargs = foundation_timm(name_or_timm_name)
    return FoundationModel(
        timm_name,
        weights=weights,
        timm_kwargs={**preset_kwargs, **(timm_kwargs or {})},
        input_norm=input_norm,
    )
