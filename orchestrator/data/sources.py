"""Where image bytes live: files of a class-folder tree, rows of Parquet shards, tar members.

`dataset.source: parquet` reads the Hugging Face ImageNet layout: shards named `<split>-*.parquet`
(under the root, `<root>/data/`, or `<root>/<split>/`), an `image` struct column with the
encoded `bytes` (and the original `path`), and an int `label` column; class names come from the
`huggingface` schema metadata (`ClassLabel` names) when the shards carry it. The root may be a
local path or an `s3://` / `gs://` URI (pyarrow filesystems).

`dataset.source: webdataset` reads WebDataset tar shards (`<split>-*.tar` under the root or
`<root>/data/`, or `<root>/<split>/*.tar`): per sample key an image member (`.jpg`, `.png`,
...) and a `.cls` member holding the integer label. The tars are scanned once for member
offsets (headers and the small `.cls` members only), so any member can be read back directly;
Ray Data's `read_webdataset` streams samples but does not expose offsets, which training's
per-epoch random order and a resume that skips without decoding both need.

An image is located by (`path`, `row`): `row` is -1 for a plain file, the row of a Parquet
shard, or the header offset of a tar member. Reading a Parquet row reads its row group once per
process (cached), so a task that walks consecutive rows reads each row group once.
"""

from __future__ import annotations

import functools
import json
import tarfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


class SourceError(ValueError):
    """A source file that cannot serve as a dataset shard (the message names it)."""


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or a URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(root)


def _uri(root: str, path: str) -> str:
    if "://" in root:
        return f"{root.split('://', 1)[0]}://{path}"
    return path


def parquet_shards(root: str, split: str) -> list[str]:
    """Sorted shard URIs of `split`: `<split>-*.parquet` / `<split>_*.parquet` under the root
    or `<root>/data`, else every `*.parquet` under `<root>/<split>/`."""
    return shards_with_suffix(root, split, ".parquet")


def shards_with_suffix(root: str, split: str, suffix: str) -> list[str]:
    fs, base = filesystem(root)
    base = base.rstrip("/")
    found: list[str] = []
    for folder in (base, f"{base}/data"):
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        found += [
            info.path
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and info.base_name.startswith((f"{split}-", f"{split}_", f"{split}."))
        ]
    if not found:
        infos = fs.get_file_info(pafs.FileSelector(f"{base}/{split}", allow_not_found=True))
        found = [
            info.path
            for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
        ]
    return [_uri(root, path) for path in sorted(found)]


def _open(uri: str) -> pq.ParquetFile:
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return pq.ParquetFile(fs.open_input_file(path))


def read_schema(uri: str) -> pa.Schema:
    """A shard's Arrow schema (its footer only)."""
    return _open(uri).schema_arrow


def check_image_schema(uri: str, schema: pa.Schema) -> None:
    """Raise `SourceError` naming the shard unless it has `image.bytes` and an int `label`."""
    if IMAGE_COLUMN not in schema.names:
        raise SourceError(f"{uri}: no `{IMAGE_COLUMN}` column (have {', '.join(schema.names)})")
    image = schema.field(IMAGE_COLUMN).type
    if not (pa.types.is_struct(image) and image.get_field_index("bytes") >= 0):
        raise SourceError(f"{uri}: column `{IMAGE_COLUMN}` is not a struct with `bytes` ({image})")
    if LABEL_COLUMN not in schema.names or not pa.types.is_integer(schema.field(LABEL_COLUMN).type):
        raise SourceError(f"{uri}: no integer `{LABEL_COLUMN}` column")


def class_names(schema: pa.Schema) -> list[str] | None:
    """`ClassLabel` names from the `huggingface` schema metadata, if the shard has them."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        return list(features[LABEL_COLUMN]["names"])
    except (KeyError, TypeError, ValueError):
        return None


def shard_labels(uri: str) -> tuple[np.ndarray, list[str] | None]:
    """(labels of every row, class names or None) of one shard; `SourceError` naming it when
    it cannot be opened or lacks the Hugging Face columns."""
    try:
        shard = _open(uri)
        schema = shard.schema_arrow
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{uri}: cannot open as Parquet ({error})") from error
    check_image_schema(uri, schema)
    labels = shard.read(columns=[LABEL_COLUMN])[LABEL_COLUMN].to_numpy()
    return labels.astype(np.int64), class_names(schema)


@functools.lru_cache(maxsize=4)
def _row_group(uri: str, group: int) -> tuple[int, list]:
    shard = _open(uri)
    start = sum(shard.metadata.row_group(i).num_rows for i in range(group))
    images = shard.read_row_group(group, columns=[IMAGE_COLUMN])[IMAGE_COLUMN]
    return start, images.combine_chunks().field("bytes").to_pylist()


@functools.lru_cache(maxsize=64)
def _group_starts(uri: str) -> np.ndarray:
    metadata = _open(uri).metadata
    return np.cumsum([0] + [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])


def locator(path: str, row: int) -> str:
    """How reports name an image: the file, or `shard#row=N`."""
    return path if row < 0 else f"{path}#row={row}"


def read_image_bytes(path: str, row: int) -> bytes:
    """The encoded image at (`path`, `row`): a whole file for `row` < 0, a tar member at header
    offset `row`, else a Parquet shard's row."""
    if row < 0:
        fs, local = filesystem(path)
        with fs.open_input_stream(local) as stream:
            return stream.read()
    if path.endswith(".tar"):
        fs, local = filesystem(path)
        with fs.open_input_file(local) as handle:
            handle.seek(row)
            archive = tarfile.TarFile(fileobj=handle, mode="r")
            member = archive.next()
            if member is None or not member.isfile():
                raise OSError(f"{path}: no file member at offset {row}")
            return archive.extractfile(member).read()
    group = int(np.searchsorted(_group_starts(path), row, side="right") - 1)
    start, images = _row_group(path, group)
    data = images[row - start]
    if data is None:
        raise OSError(f"{path} row {row}: image bytes are null")
    return data


# --------------------------------------------------------------------------------------------
# WebDataset tars
# --------------------------------------------------------------------------------------------
def tar_shards(root: str, split: str) -> list[str]:
    """Sorted tar URIs of `split`, found as `parquet_shards` finds Parquet files."""
    return shards_with_suffix(root, split, ".tar")


@dataclass(frozen=True)
class TarSample:
    key: str
    member: str
    offset: int
    size: int
    label: int


def scan_tar(uri: str, image_suffixes: frozenset[str]) -> list[TarSample]:
    """The image samples of one tar: member name, header offset, size and `.cls` label.
    `SourceError` naming the tar when it cannot be read or holds no image members."""
    fs, local = filesystem(uri)
    images: dict[str, tarfile.TarInfo] = {}
    labels: dict[str, int] = {}
    try:
        with fs.open_input_file(local) as handle, tarfile.TarFile(fileobj=handle) as archive:
            for member in archive:
                if not member.isfile() or "." not in member.name.rsplit("/", 1)[-1]:
                    continue
                # WebDataset keys end at the first dot of the file name.
                folder, _, name = member.name.rpartition("/")
                stem, _, suffix = name.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if "." + suffix.lower() in image_suffixes:
                    images.setdefault(key, member)
                elif suffix.lower() == "cls":
                    text = archive.extractfile(member).read().decode().strip()
                    if not text.lstrip("-").isdigit():
                        raise SourceError(f"{uri}: {member.name} is not an integer label")
                    labels[key] = int(text)
    except (OSError, tarfile.TarError) as error:
        raise SourceError(f"{uri}: cannot read as a tar ({error})") from error
    if not images:
        raise SourceError(f"{uri}: no image members (expected <key>.jpg/.png/... + <key>.cls)")
    missing = [key for key in images if key not in labels]
    if missing:
        raise SourceError(f"{uri}: sample {missing[0]!r} has no .cls label member")
    return [
        TarSample(key, member.name, member.offset, member.size, labels[key])
        for key, member in sorted(images.items(), key=lambda item: item[1].offset)
    ]
