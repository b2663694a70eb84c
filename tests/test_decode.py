"""Decoding every kind of bad or unusual image file, and the ADM crop (pure, no Ray)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from workloads.datasets import decode
from workloads.datasets.transforms import adm_preprocess, center_crop_arr, hflip, to_model_input

MAX_PIXELS = 100_000


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` but carries no pixel data at all."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def run(data: bytes, resolution: int | None = None) -> decode.DecodeResult:
    return decode.decode_bytes(data, max_pixels=MAX_PIXELS, resolution=resolution)


# --------------------------------------------------------------------------------------------
# Skips
# --------------------------------------------------------------------------------------------
def test_truncated_jpeg_is_skipped():
    data = encoded(noise_rgb(64, 48), "JPEG")
    assert run(data[: len(data) // 2]).skip_reason == decode.TRUNCATED


def test_truncated_png_is_skipped():
    data = encoded(noise_rgb(64, 48), "PNG")
    assert run(data[: len(data) // 2]).skip_reason == decode.TRUNCATED


def test_zero_byte_file_is_skipped():
    assert run(b"").skip_reason == decode.EMPTY_FILE


def test_text_with_an_image_extension_is_not_an_image():
    result = run(b"<html><body>404 Not Found</body></html>")
    assert result.skip_reason == decode.NOT_AN_IMAGE and result.image is None


def test_oversized_image_is_skipped_from_its_header():
    # 400 x 300 = 120k pixels > 100k: refused before decoding.
    assert run(encoded(noise_rgb(400, 300), "PNG")).skip_reason == decode.TOO_MANY_PIXELS
    # Only a header: had the pixels been decoded, this would fail as truncated/corrupt instead.
    assert run(png_header_only(1000, 1000)).skip_reason == decode.TOO_MANY_PIXELS
    # Beyond Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) the same reason applies.
    assert run(png_header_only(50_000, 50_000)).skip_reason == decode.TOO_MANY_PIXELS


def test_float_images_are_unsupported():
    image = Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F")
    assert run(encoded(image, "TIFF")).skip_reason == decode.UNSUPPORTED_MODE


def test_unreadable_paths_are_skipped(tmp_path):
    # Tests run as root, where chmod 000 does not block reads: a directory named like an
    # image and a dangling symlink stand in for "permission denied".
    directory = tmp_path / "folder.jpg"
    directory.mkdir()
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "missing.jpg")
    for path in (directory, dangling):
        result = decode.decode_file(str(path), max_pixels=MAX_PIXELS)
        assert result.skip_reason == decode.UNREADABLE, result


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------
def test_plain_rgb_needs_no_conversion():
    result = run(encoded(noise_rgb(40, 40), "PNG"), resolution=32)
    assert result.ok and result.conversions == () and result.image.mode == "RGB"


def test_cmyk_jpeg_is_converted():
    result = run(encoded(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"))
    assert result.conversions == (decode.CMYK_TO_RGB,)
    red, green, blue = result.image.getpixel((20, 20))
    assert red > 200 and green < 60 and blue < 60


def test_greyscale_is_converted():
    result = run(encoded(Image.new("L", (40, 40), 77), "PNG"))
    assert result.conversions == (decode.GREYSCALE_TO_RGB,)
    assert result.image.getpixel((0, 0)) == (77, 77, 77)


def test_palette_png_is_converted():
    image = Image.new("P", (40, 40), 3)
    image.putpalette([0, 0, 0] * 3 + [10, 200, 30] + [0, 0, 0] * 252)
    result = run(encoded(image, "PNG"))
    assert result.conversions == (decode.PALETTE_TO_RGB,)
    assert result.image.getpixel((5, 5)) == (10, 200, 30)


def test_palette_with_transparency_goes_on_white():
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0] * 256)
    result = run(encoded(image, "PNG", transparency=0))
    assert result.conversions == (decode.PALETTE_TO_RGB, decode.ALPHA_ON_WHITE)
    assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_rgba_png_is_composited_on_white():
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (200, 10, 10, 255)  # opaque: kept
    pixels[0, 1] = (0, 0, 0, 0)  # transparent black: shows white
    pixels[1, 0] = (0, 0, 0, 128)  # half black over white: mid grey
    result = run(encoded(Image.fromarray(pixels, mode="RGBA"), "PNG"))
    assert result.conversions == (decode.ALPHA_ON_WHITE,)
    assert result.image.getpixel((0, 0)) == (200, 10, 10)
    assert result.image.getpixel((1, 0)) == (255, 255, 255)
    assert all(abs(channel - 127) <= 1 for channel in result.image.getpixel((0, 1)))


def test_greyscale_with_alpha_is_converted():
    image = Image.new("LA", (8, 8), (40, 0))
    result = run(encoded(image, "PNG"))
    assert result.conversions == (decode.GREYSCALE_TO_RGB, decode.ALPHA_ON_WHITE)
    assert result.image.getpixel((0, 0)) == (255, 255, 255)


def test_16bit_greyscale_png_keeps_its_range():
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    result = run(encoded(Image.fromarray(values), "PNG"))
    assert result.conversions == (decode.SIXTEEN_TO_EIGHT_BIT, decode.GREYSCALE_TO_RGB)
    # Pillow's own convert("RGB") would clip all but the first to 255.
    assert [result.image.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]


def test_16bit_rgb_png_keeps_the_high_byte():
    pixels = np.random.default_rng(1).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    result = run(png_16bit_rgb(pixels))
    assert result.conversions == (decode.SIXTEEN_TO_EIGHT_BIT,)
    np.testing.assert_array_equal(np.asarray(result.image), (pixels >> 8).astype(np.uint8))


def test_small_images_are_kept_and_flagged_upsampled():
    result = run(encoded(noise_rgb(12, 20), "PNG"), resolution=32)
    assert result.ok and result.conversions == (decode.UPSAMPLED,)
    assert adm_preprocess(result.image, 32).shape == (3, 32, 32)


# --------------------------------------------------------------------------------------------
# ADM crop and tensor convention
# --------------------------------------------------------------------------------------------
def test_center_crop_box_halves_then_bicubic_to_the_short_side():
    image = noise_rgb(300, 130)
    # 130 >= 2 * 32 twice -> 75 x 32 (box), short side 32 already -> no-op resize, centre crop.
    expected = image.resize((150, 65), Image.BOX).resize((75, 32), Image.BOX)
    cropped = center_crop_arr(image, 32)
    assert cropped.size == (32, 32)
    left = (75 - 32) // 2
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(expected)[:, left : left + 32])


def test_center_crop_of_an_exact_size_image_is_identity():
    image = noise_rgb(32, 32)
    np.testing.assert_array_equal(np.asarray(center_crop_arr(image, 32)), np.asarray(image))


def test_model_input_range_and_layout():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 1] = 255
    tensor = to_model_input(Image.fromarray(pixels))
    assert tensor.dtype == np.float32 and tensor.shape == (3, 4, 4)
    assert tensor[0].max() == -1.0 and tensor[1].min() == 1.0


def test_hflip_mirrors_columns():
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    flipped = hflip(array)
    np.testing.assert_array_equal(flipped[..., 0], array[..., -1])
    np.testing.assert_array_equal(hflip(flipped), array)


@pytest.mark.parametrize("reason", decode.SKIP_REASONS)
def test_skip_reasons_are_short_identifiers(reason):
    assert reason.isidentifier() and reason == reason.lower()
