"""The embedded default dataset: class-conditional procedural images written as an ImageNet-style tree.

Every class has its own shape, hue family and texture; position, scale, rotation, colour jitter and
a random gradient-plus-noise background vary per image, so a classifier has to look at the object
rather than at a fixed pixel. Images are rendered at twice the target size and box-downsampled,
which gives anti-aliased edges without any resampling library in the loop.

Layout (sorted folder name -> class index is stable because names carry a two-digit prefix)::

    <root>/train/00_circle/000000.png ...
    <root>/val/00_circle/000000.png ...
    <root>/embedded_dataset.json      # completion marker: spec + generator version + identity

Each image draws from its own generator seeded by (seed, split, class, index), so the bytes of one
image never depend on how many images were requested, and the same spec always yields the same PNG
bytes (PIL, fixed compression level, no timestamps or text chunks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# What `read_split` reads: the embedded PNGs, and small user trees of common formats.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# Bump when rendering changes: it is part of the identity, so cached evaluators retrain.
GENERATOR_VERSION = 1
MARKER_NAME = "embedded_dataset.json"
SPLITS = ("train", "val")
_SPLIT_SEED_OFFSET = {"train": 0, "val": 1}
_SUPERSAMPLE = 2
_PNG_COMPRESS_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class EmbeddedDatasetSpec:
    """Parameters of the procedural dataset; together with GENERATOR_VERSION they fix every byte."""

    num_classes: int = 10
    image_size: int = 32
    train_per_class: int = 200
    val_per_class: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {self.num_classes}")
        if not 32 <= self.image_size <= 64:
            raise ValueError(f"image_size must be in [32, 64], got {self.image_size}")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ValueError("train_per_class and val_per_class must be positive")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    def identity(self) -> str:
        """Stable short id of spec + generator version, used to key caches (reference stats, evaluators)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True)
        return "embedded-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def class_names(self) -> list[str]:
        return [f"{index:02d}_{CLASSES[index].name}" for index in range(self.num_classes)]


# ---------------------------------------------------------------------------------------------
# Shapes: boolean masks over local (rotated, scaled) coordinates u, v in roughly [-1, 1].
# ---------------------------------------------------------------------------------------------


def _circle(u, v):
    return u**2 + v**2 <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u, v):
    # Equilateral, vertices at (0, 1) and (+-0.866, -0.5).
    return (v >= -0.5) & (np.sqrt(3.0) * np.abs(u) + v <= 1.0)


def _ring(u, v):
    radius = np.sqrt(u**2 + v**2)
    return (radius >= 0.55) & (radius <= 1.0)


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))


def _star(u, v):
    radius, angle = np.sqrt(u**2 + v**2), np.arctan2(v, u)
    return radius <= 0.42 + 0.58 * ((np.cos(5.0 * angle) + 1.0) / 2.0) ** 2


def _stripes_patch(u, v):
    return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.7)


def _checker_patch(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.85


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _hexagon(u, v):
    au, av = np.abs(u), np.abs(v)
    return np.maximum(av, 0.866 * au + 0.5 * av) <= 0.9


def _crescent(u, v):
    return (u**2 + v**2 <= 1.0) & ((u - 0.45) ** 2 + v**2 > 0.75**2)


def _dots_disc(u, v):
    return u**2 + v**2 <= 1.0


# ---------------------------------------------------------------------------------------------
# Textures: brightness modulation in [0, 1] over local coordinates; `frequency` is drawn per image.
# ---------------------------------------------------------------------------------------------


def _solid(u, v, frequency):
    return np.ones_like(u)


def _linear_gradient(u, v, frequency):
    return np.clip(0.5 + 0.5 * u, 0.0, 1.0)


def _radial_gradient(u, v, frequency):
    return np.clip(1.0 - np.sqrt(u**2 + v**2), 0.0, 1.0)


def _stripes(u, v, frequency):
    return (np.sin(frequency * np.pi * u) > 0).astype(np.float64)


def _checker(u, v, frequency):
    return ((np.floor(frequency * u / 2) + np.floor(frequency * v / 2)) % 2).astype(np.float64)


def _dots(u, v, frequency):
    return ((np.cos(frequency * np.pi * u) * np.cos(frequency * np.pi * v)) < 0.35).astype(
        np.float64
    )


def _rings(u, v, frequency):
    return (np.sin(frequency * np.pi * np.sqrt(u**2 + v**2)) > 0).astype(np.float64)


def _diagonal(u, v, frequency):
    return (np.sin(frequency * np.pi * (u + v) / np.sqrt(2.0)) > 0).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class _ClassRecipe:
    name: str
    shape: Callable
    hue: float  # centre of the hue family, in turns (0..1)
    texture: Callable


# Hues are spread so that neighbouring classes differ by at least ~30 degrees before jitter.
CLASSES: tuple[_ClassRecipe, ...] = (
    _ClassRecipe("circle", _circle, 0.00, _solid),
    _ClassRecipe("square", _square, 0.58, _linear_gradient),
    _ClassRecipe("triangle", _triangle, 0.16, _solid),
    _ClassRecipe("ring", _ring, 0.75, _radial_gradient),
    _ClassRecipe("cross", _cross, 0.33, _diagonal),
    _ClassRecipe("star", _star, 0.09, _radial_gradient),
    _ClassRecipe("stripes", _stripes_patch, 0.50, _stripes),
    _ClassRecipe("checker", _checker_patch, 0.87, _checker),
    _ClassRecipe("diamond", _diamond, 0.25, _rings),
    _ClassRecipe("hexagon", _hexagon, 0.66, _dots),
    _ClassRecipe("crescent", _crescent, 0.04, _linear_gradient),
    _ClassRecipe("dots", _dots_disc, 0.42, _dots),
)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """Scalar HSV -> RGB in [0, 1] (colorsys-equivalent, numpy output)."""
    sector = (hue % 1.0) * 6.0
    index = int(sector) % 6
    fraction = sector - int(sector)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    return np.array(rgb[index])


def render_image(recipe: _ClassRecipe, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one (H, W, 3) uint8 image of `recipe` with random pose, colour and background."""
    size = image_size * _SUPERSAMPLE
    axis = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")

    # Background: a linear gradient between two random colours plus a little noise later on.
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.0) / 2.0
    colour_a = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
    colour_b = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
    canvas = colour_a + ramp[..., None] * (colour_b - colour_a)

    # Object pose: the scale keeps most of the shape inside the frame at any position.
    scale = rng.uniform(0.38, 0.62)
    centre = rng.uniform(-0.9 + scale, 0.9 - scale, size=2)
    rotation = rng.uniform(0.0, 2.0 * np.pi)
    dx, dy = (x - centre[0]) / scale, (y - centre[1]) / scale
    u = np.cos(rotation) * dx + np.sin(rotation) * dy
    v = -np.sin(rotation) * dx + np.cos(rotation) * dy

    # Foreground colour: hue jitter stays inside the class family; saturation keeps it visible.
    hue = recipe.hue + rng.uniform(-0.06, 0.06)
    colour = _hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0))
    shade = 0.45 + 0.55 * recipe.texture(u, v, rng.uniform(2.5, 4.5))
    mask = recipe.shape(u, v)[..., None]
    canvas = np.where(mask, colour * shade[..., None], canvas)

    small = canvas.reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    small = small + rng.normal(0.0, rng.uniform(0.0, 0.04), size=small.shape)
    return np.clip(np.round(small * 255.0), 0, 255).astype(np.uint8)


def _image_rng(spec: EmbeddedDatasetSpec, split: str, class_index: int, image_index: int):
    return np.random.default_rng([spec.seed, _SPLIT_SEED_OFFSET[split], class_index, image_index])


def _write_png(image: np.ndarray, path: Path) -> None:
    # Fixed compression and no metadata chunks: the file bytes depend on the pixels only.
    Image.fromarray(image, mode="RGB").save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


def _render_tree(spec: EmbeddedDatasetSpec, target: Path) -> None:
    counts = {"train": spec.train_per_class, "val": spec.val_per_class}
    for split in SPLITS:
        for class_index, class_name in enumerate(spec.class_names()):
            class_dir = target / split / class_name
            class_dir.mkdir(parents=True)
            for image_index in range(counts[split]):
                rng = _image_rng(spec, split, class_index, image_index)
                image = render_image(CLASSES[class_index], spec.image_size, rng)
                _write_png(image, class_dir / f"{image_index:06d}.png")
    marker = {**spec.to_dict(), "identity": spec.identity()}
    (target / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _check_marker(root: Path, spec: EmbeddedDatasetSpec) -> bool:
    """True if `root` already holds this spec; raise if it holds a different one."""
    marker_path = root / MARKER_NAME
    if not marker_path.exists():
        return False
    found = json.loads(marker_path.read_text())
    expected = {**spec.to_dict(), "identity": spec.identity()}
    if found != expected:
        raise ValueError(
            f"{root} already holds an embedded dataset with different parameters: "
            f"found {found}, requested {expected}. Use another root directory."
        )
    return True


def write_embedded_dataset(root: Path, spec: EmbeddedDatasetSpec | None = None) -> Path:
    """Write the dataset under `root` unless it is already there; return `root`.

    Rendering happens in a sibling temporary directory that is renamed into place, so a crash
    never leaves a half-written tree with a marker, and concurrent writers of the same spec agree.
    """
    spec = spec or EmbeddedDatasetSpec()
    root = Path(root)
    if _check_marker(root, spec):
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and has no {MARKER_NAME}; refusing to write into it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _render_tree(spec, staging)
        try:
            # rename(2) replaces an empty directory atomically and fails on a non-empty one.
            os.replace(staging, root)
        except OSError:
            if not _check_marker(root, spec):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def read_split(
    root: Path, split: str, resolution: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode an ImageNet-style split into (N, H, W, 3) uint8 images, (N,) int64 labels, class names.

    Labels follow the sorted class-folder order, as torchvision's ImageFolder does. With
    `resolution`, images get the ADM centre crop the tokenizer pipeline applies, so networks
    trained here (evaluator, stand-in) see exactly the images the tokenizer sees.
    """
    from workloads.datasets.transforms import center_crop_arr

    split_dir = Path(root) / split
    shards = sorted(
        [*Path(root).glob(f"{split}-*.parquet"), *Path(root).glob(f"data/{split}-*.parquet")]
    )
    if not split_dir.is_dir() and shards:
        return _read_parquet_split(shards, resolution)
    tars = sorted([*Path(root).glob(f"{split}-*.tar"), *Path(root).glob(f"data/{split}-*.tar")])
    if not split_dir.is_dir() and tars:
        return _read_tar_split(tars, resolution)
    class_names = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    images, labels = [], []
    for label, class_name in enumerate(class_names):
        files = (split_dir / class_name).iterdir()
        for path in sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES):
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if resolution is not None and rgb.size != (resolution, resolution):
                    rgb = center_crop_arr(rgb, resolution)
                images.append(np.asarray(rgb))
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"no images under {split_dir}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), class_names


def _read_parquet_split(
    shards: list[Path], resolution: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`read_split` of Hugging Face-layout shards (`image.bytes`, `label`; class names from
    the `huggingface` metadata), as `orchestrator.data.export` writes them."""
    import io
    import json

    import pyarrow.parquet as pq

    from workloads.datasets.transforms import center_crop_arr

    images, labels, names = [], [], None
    for shard in shards:
        table = pq.read_table(shard, columns=["image", "label"])
        if names is None and b"huggingface" in (table.schema.metadata or {}):
            names = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
            names = names["label"]["names"]
        for data in table["image"].combine_chunks().field("bytes").to_pylist():
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
                if resolution is not None and rgb.size != (resolution, resolution):
                    rgb = center_crop_arr(rgb, resolution)
                images.append(np.asarray(rgb))
        labels += table["label"].to_pylist()
    names = names or [str(i) for i in range(max(labels) + 1)]
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(names)


def _read_tar_split(
    tars: list[Path], resolution: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`read_split` of WebDataset tars (`<key>.<image ext>` + `<key>.cls`); class names are
    the label numbers."""
    import io
    import tarfile

    from workloads.datasets.transforms import center_crop_arr

    samples: dict[str, dict[str, bytes]] = {}
    for tar in tars:
        with tarfile.open(tar) as archive:
            for member in archive:
                if member.isfile() and "." in member.name:
                    key, _, suffix = member.name.partition(".")
                    samples.setdefault(f"{tar}:{key}", {})[suffix.lower()] = archive.extractfile(
                        member
                    ).read()
    images, labels = [], []
    for parts in samples.values():
        data = next((parts[s.lstrip(".")] for s in IMAGE_SUFFIXES if s.lstrip(".") in parts), None)
        if data is None or "cls" not in parts:
            continue
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            if resolution is not None and rgb.size != (resolution, resolution):
                rgb = center_crop_arr(rgb, resolution)
            images.append(np.asarray(rgb))
        labels.append(int(parts["cls"]))
    if not images:
        raise FileNotFoundError(f"no image samples in {tars[0].parent}")
    names = [str(i) for i in range(max(labels) + 1)]
    return np.stack(images), np.asarray(labels, dtype=np.int64), names
