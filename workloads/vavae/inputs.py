"""Checks on images entering the tokenizer, so misuse fails early with a readable message."""

import torch

# The tokenizer expects [-1, 1]. Real pipelines overshoot slightly (resampling ringing), so only
# values well outside the range are rejected.
MAX_ABS_PIXEL = 1.5


def validate_images(x: torch.Tensor, in_channels: int, downsample_factor: int) -> None:
    """Raise ValueError unless ``x`` is an (B, in_channels, H, W) batch in [-1, 1] whose H and W
    are multiples of ``downsample_factor``."""
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} image channels, got {x.shape[1]} (input shape "
            f"{tuple(x.shape)}; images must be NCHW)"
        )
    height, width = x.shape[-2:]
    if height % downsample_factor or width % downsample_factor:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the tokenizer's downsampling "
            f"factor {downsample_factor}; crop or pad the images first"
        )
    max_abs = float(x.detach().abs().amax()) if x.numel() else 0.0
    if max_abs > MAX_ABS_PIXEL:
        hint = " (looks like [0, 255] input)" if max_abs > 2.0 else ""
        raise ValueError(
            f"images must be scaled to [-1, 1], but max |x| = {max_abs:.3g}{hint}; "
            "use x / 127.5 - 1 for uint8 pixels"
        )
