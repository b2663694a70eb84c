"""Ingestion: list an image tree, validate every file on Ray Data, write the index and skip report.

One stage, keyed by the dataset key, with its artifact in `datasets/<dataset-key>/ingest/`:

    <split>.parquet      the validated index: path, label, image_id, conversion, width, height
    skip_report.json     counts by reason and by conversion, every skipped file, empty classes
    skipped.txt          `path<TAB>reason` per skipped file (for grep and eyes)
    DONE.json            the `IngestResult`, written last

Validation decodes every pixel (a truncated JPEG only fails at its end), so it is a Ray Data
pass: the file descriptors go in as Arrow blocks, `map_batches` decodes and returns one small
row per file, and only those rows reach the driver; images never leave the task that decoded
them. Training and caching read the index, so they never meet a bad file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import ray

from orchestrator.config import ExperimentConfig, stage_keys
from orchestrator.data.listing import (
    ClassIndex,
    SplitListing,
    discover_classes,
    fingerprint,
    list_flat_split,
    list_parquet_split,
    list_split,
    list_tar_split,
    parquet_classes,
    read_val_labels,
    scan_parquet_split,
)
from orchestrator.data.parquet_io import write_table
from orchestrator.data.sources import locator, read_image_bytes
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage
from workloads.datasets.decode import UNREADABLE, DecodeResult, decode_bytes, decode_file
from workloads.datasets.embedded import EmbeddedDatasetSpec, write_embedded_dataset

log = logging.getLogger("ldm_frontier.data")

REPORT_JSON = "skip_report.json"
REPORT_TEXT = "skipped.txt"
# Skipped files named in the log; the report lists all of them.
LOGGED_SKIPS = 20
INDEX_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("row", pa.int64()),
        ("label", pa.int64()),
        ("image_id", pa.string()),
        ("conversion", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)
# Files per Ray Data block of the validation pass: enough blocks to keep every CPU busy and
# to stream, few enough that per-task overhead stays small (ImageNet: ~5k blocks).
FILES_PER_BLOCK = 256


class IngestError(RuntimeError):
    """Too many files had to be skipped (the message says how many and where the report is)."""


@dataclass(frozen=True)
class IngestResult:
    """What ingestion produced; also the content of its DONE marker."""

    dataset_key: str
    dataset_identity: str
    root: str
    class_names: list[str]
    num_classes: int
    index_paths: dict[str, str]
    counts: dict[str, int]
    skipped: dict[str, int]
    conversions: dict[str, int]
    total_files: int
    report_path: str

    @property
    def skip_fraction(self) -> float:
        return sum(self.skipped.values()) / max(self.total_files, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IngestResult:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def ingest(cfg: ExperimentConfig, storage: Storage) -> IngestResult:
    """Validate the configured dataset once (idempotent: a finished ingest is read back).

    Raises `IngestError` when more than `dataset.max_skip_fraction` of the files were skipped;
    the threshold is checked on every call, so relaxing it needs no second pass.
    """
    dataset_key = stage_keys(cfg).dataset
    rel = Artifacts.ingest(dataset_key)
    artifacts = Artifacts(storage)
    if artifacts.is_done(rel):
        result = IngestResult.from_dict(artifacts.read_done(rel))
    else:
        result = _run_ingest(cfg, storage, dataset_key, rel)
        artifacts.mark_done(rel, result.to_dict())
    _check_skip_fraction(result, cfg.dataset.max_skip_fraction)
    return result


# --------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------
def dataset_root(cfg: ExperimentConfig, storage: Storage, dataset_key: str) -> str:
    """The tree or shard folder to ingest (a path or a URI); for the embedded source, written
    first unless `dataset.root` is set."""
    data = cfg.dataset
    if data.source in ("folder", "parquet", "webdataset"):
        if data.root is None:
            raise ValueError(f"dataset.root must be set for source={data.source}")
        if "://" in data.root:
            if data.source == "folder":
                raise ValueError(
                    "source=folder reads POSIX paths; use parquet or webdataset for object stores"
                )
            return data.root
        return str(Path(data.root).expanduser().resolve())
    if data.root is not None:
        root = Path(data.root).expanduser().resolve()
    elif storage.is_local:
        root = storage.local_path(Artifacts.embedded_dataset(dataset_key))
    else:
        raise ValueError(
            f"storage {storage.uri} is an object store, where no image tree can be written; set "
            "dataset.root to a path every node sees (NFS) for the embedded dataset"
        )
    spec = EmbeddedDatasetSpec(**dataclasses.asdict(data.embedded))
    return str(write_embedded_dataset(root, spec))


def _listings(cfg: ExperimentConfig, root: str) -> tuple[ClassIndex, list[SplitListing]]:
    """The class index and one listing per split present (val is optional)."""
    data = cfg.dataset
    if data.source == "parquet":
        train = scan_parquet_split(root, data.train_split)
        classes = parquet_classes(train, data.num_classes)
        listings = [list_parquet_split(train, classes, data.max_images)]
        try:
            val = scan_parquet_split(root, data.val_split)
        except FileNotFoundError:
            log.warning(
                "no %s shards under %s; ingesting %s only", data.val_split, root, train.split
            )
        else:
            listings.append(list_parquet_split(val, classes, data.max_images))
        return classes, listings
    if data.source == "webdataset":
        train, labels = list_tar_split(root, data.train_split, data.num_classes, data.max_images)
        listings = [train]
        try:
            val, _ = list_tar_split(root, data.val_split, data.num_classes, data.max_images)
        except FileNotFoundError:
            log.warning("no %s tars under %s; ingesting %s only", data.val_split, root, train.split)
        else:
            listings.append(val)
        # Tars carry label numbers only: the numbers are the class names.
        names = [str(i) for i in range(max(labels, data.num_classes or 0))]
        return ClassIndex({name: i for i, name in enumerate(names)}, names), listings
    tree = Path(root)
    classes = discover_classes(tree / data.train_split, data.label_map)
    listings = [list_split(tree, data.train_split, classes, data.max_images)]
    if data.val_labels is not None:
        labels = read_val_labels(data.val_labels, classes, data.val_synsets)
        listings.append(
            list_flat_split(tree, data.val_split, labels, data.val_labels, data.max_images)
        )
    elif (tree / data.val_split).is_dir():
        listings.append(list_split(tree, data.val_split, classes, data.max_images))
    else:
        log.warning(
            "no %s split under %s; ingesting %s only", data.val_split, root, data.train_split
        )
    return classes, listings


def _run_ingest(
    cfg: ExperimentConfig, storage: Storage, dataset_key: str, rel: str
) -> IngestResult:
    data = cfg.dataset
    root = dataset_root(cfg, storage, dataset_key)
    classes, listings = _listings(cfg, root)
    num_classes = _num_classes(classes, data.num_classes, data.label_map)
    identity = fingerprint(listings, dataset_key)
    log.info(
        "ingesting %s: %s files in %s",
        root,
        " + ".join(f"{len(item.table)} {item.split}" for item in listings),
        storage.uri_for(rel),
    )
    checked = _validate(
        pa.concat_tables([item.table for item in listings]),
        max_pixels=data.max_image_pixels,
        resolution=data.resolution,
    )
    skipped_rows = checked.filter(pc.not_equal(checked["skip_reason"], ""))
    index_paths, counts = {}, {}
    for item in listings:
        valid = checked.filter(
            pc.and_(pc.equal(checked["split"], item.split), pc.equal(checked["skip_reason"], ""))
        )
        write_table(
            storage,
            valid.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA),
            rel,
            f"{item.split}.parquet",
        )
        index_paths[item.split] = storage.uri_for(rel, f"{item.split}.parquet")
        counts[item.split] = len(valid)
    skipped = _tally(skipped_rows["skip_reason"])
    conversions = _tally_conversions(checked)
    result = IngestResult(
        dataset_key=dataset_key,
        dataset_identity=identity,
        root=str(root),
        class_names=classes.names,
        num_classes=num_classes,
        index_paths=index_paths,
        counts=counts,
        skipped=skipped,
        conversions=conversions,
        total_files=len(checked),
        report_path=storage.uri_for(rel, REPORT_JSON),
    )
    _write_report(storage, rel, result, skipped_rows, listings)
    return result


def _num_classes(classes: ClassIndex, configured: int | None, label_map: str | None) -> int:
    if configured is None:
        return len(classes.names)
    if len(classes.names) > configured:
        source = f"label map {label_map}" if label_map else "class folders"
        raise ValueError(
            f"dataset.num_classes is {configured} but the {source} define {len(classes.names)} "
            "labels; set dataset.num_classes to null to follow the data"
        )
    return configured


def _validate(listing: pa.Table, *, max_pixels: int, resolution: int) -> pa.Table:
    """Decode every listed file on Ray Data; one small result row per file, in listing order."""
    if len(listing) == 0:
        raise FileNotFoundError("the dataset has no image files")
    listing = listing.append_column("position", pa.array(range(len(listing)), pa.int64()))
    blocks = [
        listing.slice(start, FILES_PER_BLOCK) for start in range(0, len(listing), FILES_PER_BLOCK)
    ]
    # Arrow blocks rather than `from_items` dicts: at ImageNet scale a list of 1.3M Python dicts
    # costs the driver several times the memory of the same descriptors as Arrow strings.
    results = ray.data.from_arrow(blocks).map_batches(
        _validate_files,
        batch_format="pyarrow",
        batch_size=FILES_PER_BLOCK,
        fn_kwargs={"max_pixels": max_pixels, "resolution": resolution},
    )
    checked = pa.concat_tables(results.iter_batches(batch_format="pyarrow", batch_size=None))
    # Blocks arrive in completion order; the listing order is the index order.
    return checked.sort_by("position").drop_columns(["position"])


def _check_file(
    path: str, row: int, max_pixels: int, resolution: int
) -> tuple[str, str, str, int, int]:
    """(skip reason, detail, conversions, width, height); the pixels are dropped right away."""
    if row < 0:
        result = decode_file(path, max_pixels=max_pixels, resolution=resolution)
    else:
        try:
            data = read_image_bytes(path, row)
        except (OSError, ValueError) as error:
            result = DecodeResult(None, UNREADABLE, detail=f"{type(error).__name__}: {error}")
        else:
            result = decode_bytes(data, max_pixels=max_pixels, resolution=resolution)
    width, height = result.image.size if result.ok else (0, 0)
    return result.skip_reason or "", result.detail, result.conversion_note, width, height


def _validate_files(batch: pa.Table, max_pixels: int, resolution: int) -> pa.Table:
    checks = [
        _check_file(path, row, max_pixels, resolution)
        for path, row in zip(batch["path"].to_pylist(), batch["row"].to_pylist())
    ]
    reasons, details, notes, widths, heights = zip(*checks)
    return pa.table(
        {
            "split": batch["split"],
            "position": batch["position"],
            "path": batch["path"],
            "row": batch["row"],
            "image_id": batch["image_id"],
            "label": batch["label"],
            "skip_reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details, pa.string()),
            "conversion": pa.array(notes, pa.string()),
            "width": pa.array(widths, pa.int64()),
            "height": pa.array(heights, pa.int64()),
        }
    )


# --------------------------------------------------------------------------------------------
# Report and threshold
# --------------------------------------------------------------------------------------------
def _tally(column: pa.ChunkedArray) -> dict[str, int]:
    return dict(sorted(Counter(column.to_pylist()).items()))


def _tally_conversions(checked: pa.Table) -> dict[str, int]:
    notes = checked["conversion"].to_pylist()
    return dict(sorted(Counter(c for note in notes for c in note.split("+") if c).items()))


def _write_report(
    storage: Storage,
    rel: str,
    result: IngestResult,
    skipped_rows: pa.Table,
    listings: list[SplitListing],
) -> None:
    files = [
        # `path` names the file, or the shard and row / tar offset; `image_id` the member.
        {"path": locator(path, row), "image_id": image_id, "reason": reason, "detail": detail}
        for path, row, image_id, reason, detail in zip(
            skipped_rows["path"].to_pylist(),
            skipped_rows["row"].to_pylist(),
            skipped_rows["image_id"].to_pylist(),
            skipped_rows["skip_reason"].to_pylist(),
            skipped_rows["detail"].to_pylist(),
        )
    ]
    report = {
        "dataset_identity": result.dataset_identity,
        "root": result.root,
        "total_files": result.total_files,
        "skipped_total": len(files),
        "skip_fraction": result.skip_fraction,
        "skipped_by_reason": result.skipped,
        "conversions": result.conversions,
        "counts": result.counts,
        "empty_class_folders": [name for item in listings for name in item.empty_class_folders],
        "ignored_files": [name for item in listings for name in item.ignored_files],
        "skipped": files,
    }
    storage.write_json(report, rel, REPORT_JSON)
    lines = "".join(f"{entry['path']}\t{entry['reason']}\n" for entry in files)
    storage.write_bytes(lines.encode(), rel, REPORT_TEXT)
    log.info(
        "ingested %s: kept %s; skipped %d (%s); converted %s; report %s",
        result.root,
        result.counts,
        len(files),
        result.skipped or "none",
        result.conversions or "none",
        result.report_path,
    )
    for entry in files[:LOGGED_SKIPS]:
        log.warning("skipped %s: %s (%s)", entry["path"], entry["reason"], entry["detail"])
    if len(files) > LOGGED_SKIPS:
        log.warning("... and %d more skipped files in %s", len(files) - LOGGED_SKIPS, REPORT_TEXT)
    for name in report["empty_class_folders"]:
        log.warning("empty class folder %s (its label stays reserved)", name)


def _check_skip_fraction(result: IngestResult, max_skip_fraction: float) -> None:
    skipped = sum(result.skipped.values())
    if result.skip_fraction > max_skip_fraction:
        raise IngestError(
            f"ingestion skipped {skipped} of {result.total_files} files "
            f"({result.skip_fraction:.2%} > dataset.max_skip_fraction {max_skip_fraction:.2%}); "
            f"see {result.report_path}"
        )
