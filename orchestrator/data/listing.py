"""Listing an ImageNet-style tree `<root>/<split>/<class>/<file>` into a table of file descriptors.

Labels follow torchvision's ImageFolder: sorted class-folder names -> 0..K-1, taken from the
training split so every split shares one mapping, unless a label-map file (`name index` per
line) fixes them. Listing runs on the driver with `os.scandir` (one `stat` per file, which the
dataset fingerprint needs anyway); roots must be POSIX paths every node sees (local or NFS).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

# Matched case-insensitively (ImageNet's files are `*.JPEG`).
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

LISTING_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("label", pa.int64()),
        ("size", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ClassIndex:
    """Class-folder name -> label, and the names in label order ("" for unused labels)."""

    to_label: dict[str, int]
    names: list[str]


@dataclass(frozen=True)
class SplitListing:
    """The image files of one split, plus what listing noticed on the way."""

    split: str
    table: pa.Table
    empty_class_folders: list[str]
    ignored_files: list[str]


def read_label_map(path: str) -> dict[str, int]:
    """Parse `name index` lines (blank lines and `#` comments ignored)."""
    mapping: dict[str, int] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(f"{path}:{number}: expected `<class-folder> <index>`, got {raw!r}")
        if parts[0] in mapping:
            raise ValueError(f"{path}:{number}: class {parts[0]!r} is mapped twice")
        mapping[parts[0]] = int(parts[1])
    if not mapping:
        raise ValueError(f"label map {path} is empty")
    return mapping


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def discover_classes(split_dir: Path, label_map: str | None) -> ClassIndex:
    """Labels from sorted folder names of `split_dir`, or from the label map."""
    folders = _class_folders(split_dir)
    if not folders:
        raise FileNotFoundError(f"no class folders under {split_dir}")
    if label_map is None:
        return ClassIndex({name: label for label, name in enumerate(folders)}, folders)
    mapping = read_label_map(label_map)
    unmapped = [name for name in folders if name not in mapping]
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} class folders of {split_dir} are not in the label map "
            f"{label_map}: {', '.join(unmapped[:10])}"
        )
    names = [""] * (max(mapping.values()) + 1)
    for name, label in mapping.items():
        names[label] = name
    return ClassIndex(mapping, names)


def _evenly_spaced(count: int, cap: int | None) -> np.ndarray:
    # Evenly spaced over the sorted listing, so a capped split still spans every class.
    if cap is None or cap >= count:
        return np.arange(count)
    return (np.arange(cap) * count) // cap


def list_split(root: Path, split: str, classes: ClassIndex, max_images: int | None) -> SplitListing:
    """List `<root>/<split>/<class>/*` image files in class-folder order, then file-name order.

    Files with other extensions are ignored (and returned, for the report); with `max_images`
    an evenly spaced subset of the sorted listing is kept.
    """
    split_dir = root / split
    rows: list[tuple[str, str, int, int]] = []
    empty, ignored = [], []
    for class_name in _class_folders(split_dir):
        if class_name not in classes.to_label:
            raise ValueError(
                f"class folder {split_dir / class_name} does not exist in the training split "
                "(or the label map); labels would not line up across splits"
            )
        found = 0
        for entry in sorted(os.scandir(split_dir / class_name), key=lambda e: e.name):
            relative = f"{split}/{class_name}/{entry.name}"
            if Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append(relative)
                continue
            # A dangling link or an unreadable entry still counts as an image file: ingestion
            # reports it as `unreadable` instead of silently shrinking the dataset.
            try:
                size = entry.stat().st_size if entry.is_file() else 0
            except OSError:
                size = 0
            rows.append((entry.path, relative, classes.to_label[class_name], size))
            found += 1
        if found == 0:
            empty.append(f"{split}/{class_name}")
    keep = _evenly_spaced(len(rows), max_images)
    rows = [rows[i] for i in keep]
    table = pa.table(
        {
            "split": [split] * len(rows),
            "path": [r[0] for r in rows],
            "image_id": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "size": [r[3] for r in rows],
        },
        schema=LISTING_SCHEMA,
    )
    return SplitListing(split, table, empty, ignored)


def fingerprint(listings: list[SplitListing], dataset_key: str) -> str:
    """Content identity: the config-level dataset key plus every sorted relative path and size.

    Sizes stand in for content hashes: reading every byte of ImageNet twice (once to hash, once
    to validate) would double the ingestion I/O, and a changed file almost always changes size.
    """
    digest = hashlib.sha256(f"dataset-key {dataset_key}\n".encode())
    for listing in sorted(listings, key=lambda item: item.split):
        ids = listing.table.column("image_id").to_pylist()
        sizes = listing.table.column("size").to_pylist()
        for image_id, size in zip(ids, sizes):
            digest.update(f"{image_id}\t{size}\n".encode())
    return "sha256:" + digest.hexdigest()
