"""Where image bytes live: files of a class-folder tree, or rows of Parquet shards.

`dataset.source: parquet` reads the Hugging Face ImageNet layout: shards named `<split>-*.parquet`
(under the root, `<root>/data/`, or `<root>/<split>/`), an `image` struct column with the
encoded `bytes` (and the original `path`), and an int `label` column; class names come from the
`huggingface` schema metadata (`ClassLabel` names) when the shards carry it. The root may be a
local path or an `s3://` / `gs://` URI (pyarrow filesystems).

An image is located by (`path`, `row`): `row` is -1 for a plain file, else the row of the
Parquet shard `path`. Reading a row reads its row group once per process (cached), so a task
that walks consecutive rows reads each row group once.
"""

from __future__ import annotations

import functools
import json

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
    fs, base = filesystem(root)
    base = base.rstrip("/")
    found: list[str] = []
    for folder in (base, f"{base}/data"):
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        found += [
            info.path
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and info.base_name.startswith((f"{split}-", f"{split}_", f"{split}."))
        ]
    if not found:
        infos = fs.get_file_info(pafs.FileSelector(f"{base}/{split}", allow_not_found=True))
        found = [
            info.path
            for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        ]
    return [_uri(root, path) for path in sorted(found)]


def _open(uri: str) -> pq.ParquetFile:
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return pq.ParquetFile(fs.open_input_file(path))


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
    """The encoded image at (`path`, `row`): a whole file for `row` < 0, else a shard's row."""
    if row < 0:
        fs, local = filesystem(path)
        with fs.open_input_stream(local) as stream:
            return stream.read()
    group = int(np.searchsorted(_group_starts(path), row, side="right") - 1)
    start, images = _row_group(path, group)
    data = images[row - start]
    if data is None:
        raise OSError(f"{path} row {row}: image bytes are null")
    return data
