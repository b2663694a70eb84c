"""Image preprocessing shared by tokenizer training, evaluation and latent caching.

The crop is ADM's `center_crop_arr` (guided-diffusion `image_datasets.py`), which LightningDiT
uses for both the tokenizer and the latent extraction; the tensor convention is torchvision's
`ToTensor()` + `Normalize(0.5, 0.5)`, i.e. float32 CHW in [-1, 1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop_arr(image: Image.Image, image_size: int) -> Image.Image:
    """ADM centre crop of an RGB image to `image_size` x `image_size`.

    Box-downsample by 2 while the short side is at least twice the target (cheap, alias-free
    shrinking of large photos), bicubic-resize so the short side equals the target, then cut
    the centre. Images smaller than the target are upsampled by the bicubic step, as in ADM.
    """
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    pixels = np.asarray(image)
    # Floor division: for an odd excess the extra row/column is dropped at the bottom/right.
    top = (pixels.shape[0] - image_size) // 2
    left = (pixels.shape[1] - image_size) // 2
    return Image.fromarray(pixels[top : top + image_size, left : left + image_size])


def to_model_input(image: Image.Image) -> np.ndarray:
    """RGB uint8 image -> float32 (3, H, W) in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got array shape {pixels.shape}")
    # Contiguous CHW: a transposed view keeps HWC memory order, which torch would read as
    # channels_last and run through other conv kernels (different rounding, same values ~1e-6).
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    return chw / np.float32(127.5) - np.float32(1.0)


def adm_preprocess(image: Image.Image, resolution: int) -> np.ndarray:
    """ADM centre crop to `resolution`, then the model's float32 (3, R, R) [-1, 1] convention."""
    return to_model_input(center_crop_arr(image, resolution))


def hflip(chw: np.ndarray) -> np.ndarray:
    """Horizontal flip of a (..., H, W) array, as a contiguous copy.

    The reference flips after the crop (`RandomHorizontalFlip(p=1)` follows `center_crop_arr`);
    for an odd excess width the two orders differ by one column, so flip the cropped image.
    """
    return np.ascontiguousarray(chw[..., ::-1])
