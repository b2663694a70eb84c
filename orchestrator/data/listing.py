"""Listing a dataset into a table of image descriptors: an ImageNet-style tree
`<root>/<split>/<class>/<file>`, a flat `val/` with a ground-truth file, Parquet shards, or
WebDataset tars (`sources.py`).

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

from orchestrator.data.sources import (
    SourceError,
    filesystem,
    parquet_shards,
    scan_tar,
    shard_labels,
    tar_shards,
)

# Matched case-insensitively (ImageNet's files are `*.JPEG`).
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

LISTING_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("path", pa.string()),
        ("row", pa.int64()),
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
    return SplitListing(split, _table(split, rows, max_images), empty, ignored)


def _table(split: str, rows: list[tuple], max_images: int | None) -> pa.Table:
    """Listing rows (path, image_id, label, size[, row]) as a table, capped evenly."""
    rows = [rows[i] for i in _evenly_spaced(len(rows), max_images)]
    return pa.table(
        {
            "split": [split] * len(rows),
            "path": [r[0] for r in rows],
            "row": [r[4] if len(r) > 4 else -1 for r in rows],
            "image_id": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "size": [r[3] for r in rows],
        },
        schema=LISTING_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# A flat validation folder (ILSVRC's `val/`) with a ground-truth file
# --------------------------------------------------------------------------------------------
def read_val_labels(path: str, classes: ClassIndex, synsets_path: str | None) -> dict[str, int]:
    """File name (without extension) -> label, from Kaggle's `LOC_val_solution.csv`
    (`ImageId,PredictionString`, the synset first) or ILSVRC's ground-truth list (one
    1-based ILSVRC2012_ID per line, for the files in sorted order; its IDs need the devkit's
    synset list in ID order, `dataset.val_synsets`). Synsets map through the class index."""
    lines = Path(path).read_text().splitlines()

    def label_of(synset: str, number: int) -> int:
        if synset not in classes.to_label:
            raise SourceError(
                f"{path}:{number}: synset {synset!r} is not a class of the training split"
            )
        return classes.to_label[synset]

    if lines and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        labels = {}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            image_id, _, prediction = line.partition(",")
            if not prediction.split():
                raise ValueError(f"{path}:{number}: no synset in {line!r}")
            labels[image_id.strip()] = label_of(prediction.split()[0], number)
        return labels
    if synsets_path is None:
        raise ValueError(
            f"{path}: an ILSVRC ground-truth list needs dataset.val_synsets (the devkit's "
            "synsets in ILSVRC2012_ID order, one per line)"
        )
    synsets = [s.strip() for s in Path(synsets_path).read_text().splitlines() if s.strip()]
    ids = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not line.strip().isdigit() or not 1 <= int(line) <= len(synsets):
            raise ValueError(f"{path}:{number}: expected an ILSVRC2012_ID in 1..{len(synsets)}")
        ids.append((number, int(line)))
    return {f"#{k}": label_of(synsets[i - 1], number) for k, (number, i) in enumerate(ids)}


def list_flat_split(
    root: Path, split: str, labels: dict[str, int], labels_path: str, max_images: int | None
) -> SplitListing:
    """List `<root>/<split>/*` image files (no class folders), labelled from `labels`."""
    split_dir = root / split
    entries = sorted(
        (e for e in os.scandir(split_dir) if e.is_file() or e.is_symlink()), key=lambda e: e.name
    )
    images = [e for e in entries if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS]
    ignored = [f"{split}/{e.name}" for e in entries if e not in images]
    positional = all(key.startswith("#") for key in labels)
    if positional and len(labels) != len(images):
        raise ValueError(
            f"{labels_path} has {len(labels)} labels but {split_dir} has {len(images)} images"
        )
    rows = []
    for k, entry in enumerate(images):
        key = f"#{k}" if positional else Path(entry.name).stem
        if key not in labels:
            raise ValueError(f"{labels_path}: no label for {split_dir / entry.name}")
        try:
            size = entry.stat().st_size
        except OSError:
            size = 0
        rows.append((entry.path, f"{split}/{entry.name}", labels[key], size))
    return SplitListing(split, _table(split, rows, max_images), [], ignored)


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


# --------------------------------------------------------------------------------------------
# Parquet shards (the Hugging Face layout)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetSplit:
    """The shards of a split, each shard's labels, and the class names found in metadata."""

    split: str
    shards: list[str]
    labels: list[np.ndarray]
    sizes: list[int]
    names: list[str] | None


def scan_parquet_split(root: str, split: str) -> ParquetSplit:
    """Open every shard of `split` (labels and metadata only); errors name the shard."""
    shards = parquet_shards(root, split)
    if not shards:
        raise FileNotFoundError(
            f"no Parquet shards of split {split!r} under {root} (looked for {split}-*.parquet "
            f"in it and in data/, and for {split}/*.parquet)"
        )
    labels, names = [], None
    for uri in shards:
        shard_labels_, shard_names = shard_labels(uri)
        labels.append(shard_labels_)
        names = names or shard_names
    fs, _ = filesystem(root)
    sizes = [info.size or 0 for info in fs.get_file_info([filesystem(u)[1] for u in shards])]
    return ParquetSplit(split, shards, labels, sizes, names)


def parquet_classes(train: ParquetSplit, num_classes: int | None) -> ClassIndex:
    """Class names from the shards' metadata, else the label numbers as names."""
    if train.names:
        names = list(train.names)
    else:
        top = max((int(labels.max()) for labels in train.labels if len(labels)), default=-1)
        names = [str(i) for i in range(max(top + 1, num_classes or 0))]
    return ClassIndex({name: label for label, name in enumerate(names)}, names)


def list_parquet_split(
    scanned: ParquetSplit, classes: ClassIndex, max_images: int | None
) -> SplitListing:
    """One listing row per shard row: (shard, row), `image_id` `<shard name>#<row>`."""
    rows = []
    for uri, labels, size in zip(scanned.shards, scanned.labels, scanned.sizes):
        bad = labels[(labels < 0) | (labels >= len(classes.names))]
        if len(bad):
            raise ValueError(f"{uri}: label {int(bad[0])} is outside 0..{len(classes.names) - 1}")
        name = uri.rsplit("/", 1)[-1]
        rows += [(uri, f"{name}#{i}", int(label), size, i) for i, label in enumerate(labels)]
    return SplitListing(scanned.split, _table(scanned.split, rows, max_images), [], [])


# --------------------------------------------------------------------------------------------
# WebDataset tars
# --------------------------------------------------------------------------------------------
def list_tar_split(
    root: str, split: str, num_classes: int | None, max_images: int | None
) -> tuple[SplitListing, int]:
    """One listing row per image member (tar, header offset), `image_id` `<tar name>/<member>`;
    also the label count the members imply (max `.cls` + 1)."""
    shards = tar_shards(root, split)
    if not shards:
        raise FileNotFoundError(
            f"no WebDataset tars of split {split!r} under {root} (looked for {split}-*.tar in "
            f"it and in data/, and for {split}/*.tar)"
        )
    rows = []
    for uri in shards:
        name = uri.rsplit("/", 1)[-1]
        for sample in scan_tar(uri, IMAGE_EXTENSIONS):
            if sample.label < 0 or (num_classes is not None and sample.label >= num_classes):
                raise SourceError(f"{uri}: {sample.member} has label {sample.label}")
            rows.append((uri, f"{name}/{sample.member}", sample.label, sample.size, sample.offset))
    labels = max((row[2] for row in rows), default=-1) + 1
    return SplitListing(split, _table(split, rows, max_images), [], []), labels
