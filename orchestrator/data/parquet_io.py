"""Parquet files in the storage location: whole-file atomic writes and reads by URI."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.storage.store import Storage


def table_bytes(table: pa.Table, **write_options) -> bytes:
    """`table` serialised as one Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options)
    return sink.getvalue().to_pybytes()


def write_table(storage: Storage, table: pa.Table, *parts: str, **write_options) -> None:
    """Write `table` to `parts` under the storage root; readers never see a partial file
    (`Storage.write_bytes` renames a finished temporary into place)."""
    storage.write_bytes(table_bytes(table, **write_options), *parts)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file given as a local path or a filesystem URI (s3://, gs://, ...)."""
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return pq.read_table(path, filesystem=filesystem, columns=columns)


def read_schema_metadata(uri: str) -> dict[bytes, bytes]:
    """The file-level key-value metadata of a Parquet file (only its footer is read)."""
    filesystem, path = pafs.FileSystem.from_uri(uri)
    with filesystem.open_input_file(path) as handle:
        return dict(pq.read_metadata(handle).metadata or {})
