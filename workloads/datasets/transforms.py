"""Image preprocessing for tokenizer training, evaluation and latent caching.

The reference (hustvl/LightningDiT at 2725fed) uses three different ones, and so do we:

- Tokenizer training (`vavae/ldm/data/imagenet.py` -> taming `ImagePaths`, `random_crop=True`):
  albumentations `SmallestMaxSize(256)` (cv2 `INTER_LINEAR`) and `RandomCrop(256)`, a new crop
  per sample and epoch, no flip: `resize_short_side` + `random_crop`, `dataset.train_crop:
  random`. `center` swaps in the ADM crop below (one fixed crop per image).
- Latent extraction (`extract_features.py`) and ADM-style reference statistics: ADM's
  `center_crop_arr` (guided-diffusion `image_datasets.py`), plus the flipped copy.
- Tokenizer evaluation (`evaluate_tokenizer.py`): torchvision `Resize(256)` + `CenterCrop(256)`
  on the tensor: `resize_center_crop`.

The tensor convention is torchvision's `ToTensor()` + `Normalize(0.5, 0.5)`, i.e. float32 CHW
in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
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


def resize_short_side(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the short side is `size`, as albumentations `SmallestMaxSize` with cv2
    `INTER_LINEAR`: plain bilinear on half-pixel centres, no antialiasing (cv2 does not filter
    when shrinking), long side `round(long * size / short)`. Returns uint8 HWC.

    cv2's uint8 path rounds its fixed-point weights; this float path differs by at most one
    grey level on some pixels (cv2 is not a dependency here).
    """
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    scale = size / min(height, width)
    target = (max(size, round(height * scale)), max(size, round(width * scale)))
    if target == (height, width):
        return pixels
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None]
    resized = F.interpolate(chw, size=target, mode="bilinear", align_corners=False)
    out = resized[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def random_crop(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size` x `size` window of an HWC array, its corner uniform over every valid position
    (albumentations `RandomCrop`)."""
    top = int(rng.integers(0, pixels.shape[0] - size + 1))
    left = int(rng.integers(0, pixels.shape[1] - size + 1))
    return pixels[top : top + size, left : left + size]


def reference_train_preprocess(
    image: Image.Image, resolution: int, rng: np.random.Generator
) -> np.ndarray:
    """The reference tokenizer's training view: short side to `resolution` (bilinear), a random
    square crop drawn from `rng`, no flip; float32 (3, R, R) in [-1, 1]."""
    crop = random_crop(resize_short_side(image, resolution), resolution, rng)
    return to_model_input(Image.fromarray(np.ascontiguousarray(crop)))


def resize_center_crop(image: Image.Image, resolution: int) -> np.ndarray:
    """torchvision `ToTensor` -> `Resize(R)` -> `CenterCrop(R)` -> `Normalize(0.5, 0.5)`, the
    reference's tokenizer-evaluation view; float32 (3, R, R) in [-1, 1].

    Tensor `Resize` is bilinear with antialiasing, long side `int(R * long / short)`; the crop
    corner is `round((side - R) / 2)`.
    """
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    short, long = min(height, width), max(height, width)
    long_target = int(resolution * long / short)
    target = (resolution, long_target) if height <= width else (long_target, resolution)
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None] / 255.0
    if target != (height, width):
        chw = F.interpolate(chw, size=target, mode="bilinear", align_corners=False, antialias=True)
    top = int(round((target[0] - resolution) / 2.0))
    left = int(round((target[1] - resolution) / 2.0))
    crop = chw[0, :, top : top + resolution, left : left + resolution]
    return np.ascontiguousarray((crop * 2.0 - 1.0).numpy(), dtype=np.float32)
