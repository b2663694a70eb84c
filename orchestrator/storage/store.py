"""One storage location for everything a sweep writes, local or shared (NFS, S3, GCS).

`storage` in the config is a local path (an NFS mount on a cluster) or a `s3://` / `gs://` URI.
Every stage writes through a `Storage`: Ray Train's `storage_path`, checkpoints, latent caches,
evaluation outputs, the Tune experiment and (for a local path) the MLflow store. Writes of small
files are atomic (write to a temporary name, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "az://")


def open_input(path: str):
    """A read stream of one file given as a local path or a pyarrow-readable URI (`s3://`...)."""
    if "://" in path:
        filesystem, location = pafs.FileSystem.from_uri(path)
    else:
        filesystem, location = pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())
    return filesystem.open_input_stream(location)


def content_digest(path: str) -> str | None:
    """sha256 of a file's content (local path or URI), or None when it cannot be read.

    Stage keys of points built from outside checkpoints hash the file, and keys are computed
    often: a local file is hashed once per (size, mtime), a remote one once per process.
    """
    try:
        if "://" in path:
            stamp = None
        else:
            stat = Path(path).expanduser().resolve().stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
        return _digest(path, stamp)
    except (OSError, pa.ArrowException):
        return None


@functools.lru_cache(maxsize=64)
def _digest(path: str, stamp: tuple[int, int] | None) -> str:
    digest = hashlib.sha256()
    with open_input(path) as stream:
        for chunk in iter(lambda: stream.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The one place besides `--storage` where a sweep on object storage writes to local disk: copies
# of frozen networks (stand-in ViT, proxy evaluator) that the code loads from a path. Safe to
# delete; rebuilt from the store on the next use.
CACHE_ENV = "LDM_CACHE_DIR"


def local_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ldm_frontier").expanduser()


def local_copy(location: str) -> Path:
    """A local path with the contents of `location` (a local path, returned as is, or a file or
    directory URI, downloaded once into the local cache)."""
    if "://" not in location:
        return Path(location)
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    target = local_cache_root() / "copies" / digest / posixpath.basename(location.rstrip("/"))
    if target.exists():
        return target
    filesystem, path = pafs.FileSystem.from_uri(location)
    staging = target.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    if filesystem.get_file_info(path).type == pafs.FileType.Directory:
        (staging / "d").mkdir()
        pafs.copy_files(
            path,
            str(staging / "d"),
            source_filesystem=filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
    else:
        with filesystem.open_input_stream(path) as stream, open(staging / "d", "wb") as out:
            shutil.copyfileobj(stream, out)
    try:
        os.replace(staging / "d", target)  # atomic: a concurrent copier's result is as good
    except OSError:
        pass
    shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Storage:
    """A root directory on a pyarrow filesystem; paths below it are POSIX-style relatives."""

    uri: str
    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def from_uri(cls, uri: str) -> Storage:
        if uri.startswith(REMOTE_SCHEMES):
            filesystem, root = pafs.FileSystem.from_uri(uri)
            return cls(uri.rstrip("/"), filesystem, root.rstrip("/"))
        root = str(Path(uri).expanduser().resolve())
        return cls(root, pafs.LocalFileSystem(), root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Filesystem path of `parts` under the root (for pyarrow / Ray Data calls)."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def uri_for(self, *parts: str) -> str:
        """A string Ray (`storage_path`) and pyarrow accept: a local path or a full URI."""
        return posixpath.join(self.uri, *parts) if parts else self.uri

    def local_path(self, *parts: str) -> Path:
        """A local `Path` under the root; only for local storage (raises for object stores)."""
        if not self.is_local:
            raise ValueError(f"storage {self.uri} is not a local filesystem")
        return Path(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.filesystem.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> str:
        target = self.path(*parts)
        self.filesystem.create_dir(target, recursive=True)
        return target

    def listdir(self, *parts: str) -> list[str]:
        """Base names directly under a directory (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(
            posixpath.basename(info.path) for info in self.filesystem.get_file_info(selector)
        )

    def read_bytes(self, *parts: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(*parts)) as stream:
            return stream.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Atomic on local and NFS storage (rename); object stores publish whole objects anyway."""
        target = self.path(*parts)
        self.filesystem.create_dir(posixpath.dirname(target), recursive=True)
        if not self.is_local:
            with self.filesystem.open_output_stream(target) as stream:
                stream.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def read_json(self, *parts: str) -> dict:
        return json.loads(self.read_bytes(*parts))

    def write_json(self, obj: object, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def delete(self, *parts: str) -> None:
        target = self.path(*parts)
        info = self.filesystem.get_file_info(target)
        if info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(target)
        elif info.type == pafs.FileType.File:
            self.filesystem.delete_file(target)

    def upload(self, local_dir: str | Path, *parts: str) -> None:
        """Copy a local directory tree to `parts` (a no-op copy when storage is that directory)."""
        self.makedirs(*parts)
        pafs.copy_files(
            str(local_dir),
            self.path(*parts),
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def built_file(self, rel: str, build: Callable[[Path], Path]) -> tuple[Path, str]:
        """(local path, location in storage) of what `build(cache_dir)` finds or makes in a
        cache directory (a frozen network trained once and kept).

        On local storage the cache directory is `rel` itself. On object storage it lives in the
        local cache: the store's copy is brought down first, and a new build goes up to `rel`,
        where other nodes and later runs find it (`local_copy`)."""
        if self.is_local:
            out = Path(build(self.local_path(rel)))
            return out, str(out)
        digest = hashlib.sha256(self.uri_for(rel).encode()).hexdigest()[:16]
        local = local_cache_root() / "builds" / digest
        if not local.exists() and self.exists(rel):
            self.download(local, rel)
        out = Path(build(local))
        parts = out.relative_to(local).parts
        if not self.exists(rel, parts[0]):
            self.upload(local / parts[0], rel, parts[0])
        return out, self.uri_for(rel, *parts)

    def download(self, local_dir: str | Path, *parts: str) -> Path:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self.path(*parts),
            str(local_dir),
            source_filesystem=self.filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return Path(local_dir)
