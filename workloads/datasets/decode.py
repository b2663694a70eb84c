"""Robust decoding of one image file into RGB, or a short reason to skip it.

Real image folders contain files that are not what their extension says: zero-byte and
truncated downloads, HTML error pages saved as `.jpg`, CMYK JPEGs (ImageNet has 22), PNGs with
alpha or 16 bits per channel, palette GIFs, and the odd decompression bomb. Each file ends as
either an RGB `PIL.Image` plus the conversions applied, or one stable skip reason.

Decisions:
- Alpha is composited on white (what a browser shows). Dropping it instead, as the reference's
  `convert("RGB")` does, exposes whatever colour sits under transparent pixels (often black).
  ImageNet holds no alpha images, so the paper's numbers are unaffected.
- 16 bits per channel keep the high byte (v >> 8), the libpng `strip_16` convention Pillow
  already applies to 16-bit RGB(A) PNGs; greyscale `I;16` is scaled the same way instead of
  Pillow's `convert`, which clips every value above 255 to white.
- Images smaller than the training resolution are kept: ADM's crop upsamples them (bicubic),
  so keeping them is what the reference does. They are counted as `upsampled`.
- EXIF orientation is ignored, as the reference (Pillow + torchvision) ignores it.
- The pixel limit is checked on the header, before any pixel is decoded. Pillow's own hard
  limit (2 x `Image.MAX_IMAGE_PIXELS`) also applies and lands in the same reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# Skip reasons: short, stable identifiers (they key the ingestion report).
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not_an_image"
TOO_MANY_PIXELS = "too_many_pixels"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNSUPPORTED_MODE = "unsupported_mode"
SKIP_REASONS = (
    EMPTY_FILE,
    UNREADABLE,
    NOT_AN_IMAGE,
    TOO_MANY_PIXELS,
    TRUNCATED,
    CORRUPT,
    UNSUPPORTED_MODE,
)

# Conversions: also stable identifiers, counted in the report and kept per file in the index.
CMYK_TO_RGB = "cmyk_to_rgb"
GREYSCALE_TO_RGB = "greyscale_to_rgb"
PALETTE_TO_RGB = "palette_to_rgb"
ALPHA_ON_WHITE = "alpha_on_white"
SIXTEEN_TO_EIGHT_BIT = "16bit_to_8bit"
COLORSPACE_TO_RGB = "colorspace_to_rgb"
UPSAMPLED = "upsampled"

_GREYSCALE_MODES = ("1", "L")
_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")
_OTHER_COLOR_MODES = ("YCbCr", "LAB", "HSV")
# Errors Pillow raises on damaged data (zlib errors surface as OSError, broken PNG chunks as
# SyntaxError, short reads as EOFError or struct-level ValueError).
_DAMAGED_DATA_ERRORS = (OSError, SyntaxError, EOFError, ValueError)


@dataclass(frozen=True)
class DecodeResult:
    """An RGB image and the conversions applied, or a skip reason (then `image` is None)."""

    image: Image.Image | None
    skip_reason: str | None = None
    conversions: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.skip_reason is None

    @property
    def conversion_note(self) -> str:
        """The conversions as one string ("cmyk_to_rgb+upsampled"; empty when none)."""
        return "+".join(self.conversions)


def _skip(reason: str, detail: str = "") -> DecodeResult:
    return DecodeResult(image=None, skip_reason=reason, detail=detail)


def _damage_reason(error: Exception) -> str:
    return TRUNCATED if "truncat" in str(error).lower() else CORRUPT


def _is_sixteen_bit(image: Image.Image) -> bool:
    # Pillow decodes 16-bit RGB(A) PNG/TIFF straight to 8 bits; only the tile's raw mode
    # ("RGB;16B", ...) still tells, and only before `load()` consumes the tiles.
    return image.mode in _SIXTEEN_BIT_GREY_MODES or any(";16" in str(t.args) for t in image.tile)


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> tuple[Image.Image | None, list[str]]:
    """Convert a loaded image to RGB; None when the mode has no faithful conversion."""
    mode = image.mode
    if mode == "RGB":
        return image, []
    if mode in _SIXTEEN_BIT_GREY_MODES:
        high_byte = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(high_byte, mode="L").convert("RGB"), [GREYSCALE_TO_RGB]
    if mode in _GREYSCALE_MODES:
        return image.convert("RGB"), [GREYSCALE_TO_RGB]
    if mode == "P":
        # A palette may declare a transparent index; honour it like any other alpha.
        if "transparency" in image.info:
            return _composite_on_white(image), [PALETTE_TO_RGB, ALPHA_ON_WHITE]
        return image.convert("RGB"), [PALETTE_TO_RGB]
    if mode in _ALPHA_MODES:
        notes = [PALETTE_TO_RGB] if mode == "PA" else []
        notes += [GREYSCALE_TO_RGB] if mode in ("LA", "La") else []
        return _composite_on_white(image), [*notes, ALPHA_ON_WHITE]
    if mode == "CMYK":
        return image.convert("RGB"), [CMYK_TO_RGB]
    if mode in _OTHER_COLOR_MODES:
        return image.convert("RGB"), [COLORSPACE_TO_RGB]
    # "F" (float) and other exotic modes have no agreed range to map onto 8 bits.
    return None, []


def decode_bytes(data: bytes, *, max_pixels: int, resolution: int | None = None) -> DecodeResult:
    """Decode one file's bytes into RGB, or say why not.

    `max_pixels` bounds width x height (checked on the header before decoding); with
    `resolution`, an image whose short side is below it is flagged `upsampled` (kept).
    """
    if not data:
        return _skip(EMPTY_FILE)
    with warnings.catch_warnings():
        # Our own limit decides below; Pillow's warning between 1x and 2x its limit is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as error:
            return _skip(NOT_AN_IMAGE, str(error))
        except Image.DecompressionBombError as error:
            return _skip(TOO_MANY_PIXELS, str(error))
        except _DAMAGED_DATA_ERRORS as error:
            return _skip(_damage_reason(error), str(error))
    width, height = image.size
    if width * height > max_pixels:
        return _skip(TOO_MANY_PIXELS, f"{width}x{height} > {max_pixels} pixels")
    if width == 0 or height == 0:
        return _skip(CORRUPT, f"empty canvas {width}x{height}")
    sixteen_bit = _is_sixteen_bit(image)
    try:
        image.load()
    except _DAMAGED_DATA_ERRORS as error:
        return _skip(_damage_reason(error), str(error))
    rgb, notes = _to_rgb(image)
    if rgb is None:
        return _skip(UNSUPPORTED_MODE, f"mode {image.mode}")
    if sixteen_bit:
        notes.insert(0, SIXTEEN_TO_EIGHT_BIT)
    if resolution is not None and min(width, height) < resolution:
        notes.append(UPSAMPLED)
    return DecodeResult(image=rgb, conversions=tuple(notes))


def decode_file(path: str, *, max_pixels: int, resolution: int | None = None) -> DecodeResult:
    """`decode_bytes` of a file; a file that cannot be read (permissions, a directory, a
    dangling link, an I/O error) is skipped as `unreadable`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return _skip(UNREADABLE, f"{type(error).__name__}: {error}")
    return decode_bytes(data, max_pixels=max_pixels, resolution=resolution)
