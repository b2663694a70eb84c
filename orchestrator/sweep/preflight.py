"""The outside world, checked before any work (and by `--dry-run`): the dataset's layout, the
storage's writability, the tracking server's answer.

Config validation proves a sweep file is well formed; this proves that what it points at is
there. Each check raises `PreflightError` (a `ConfigError`: one line naming what and where,
exit 2) and writes nothing that outlives it: a storage probe is deleted again, and a storage
folder that does not exist yet is not created (its nearest existing parent is probed instead).
Every network check has a short timeout, so an unreachable endpoint answers in seconds.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from orchestrator.config import ConfigError, ExperimentConfig
from orchestrator.storage.store import REMOTE_SCHEMES

# Seconds one network check may take (an object store's write + delete, one HTTP request).
NETWORK_TIMEOUT_S = 10.0


class PreflightError(ConfigError):
    """Something the config points at is missing, unreadable, unwritable or not answering."""


# --------------------------------------------------------------------------------------------
# Dataset layout, one function per `dataset.source`
# --------------------------------------------------------------------------------------------
def _has_class_folder_with_files(split_dir: Path) -> bool:
    for entry in os.scandir(split_dir):
        if entry.is_dir() and any(f.is_file() for f in os.scandir(entry.path)):
            return True
    return False


def check_folder_dataset(cfg: ExperimentConfig) -> None:
    """`<root>/<split>/<class>/<image>` for the train and val splits (the tokenizer's
    reconstruction metrics read val; a missing val would only fail at evaluation)."""
    ds = cfg.dataset
    if ds.root is None:
        raise PreflightError("dataset.root", "not set: pass --data-root <folder with train/ val/>")
    root = Path(ds.root).expanduser()
    if not os.access(root, os.R_OK | os.X_OK):
        raise PreflightError("dataset.root", f"{root}: not readable")
    for split in (ds.train_split, ds.val_split):
        split_dir = root / split
        if not split_dir.is_dir():
            raise PreflightError(
                "dataset.root", f"{root}: no `{split}/` folder (expected <root>/{split}/<class>/)"
            )
        if split == ds.val_split and ds.val_labels is not None:
            # ILSVRC's flat val/: the images sit in the folder, their classes in the labels file.
            if not any(entry.is_file() for entry in os.scandir(split_dir)):
                raise PreflightError("dataset.val_labels", f"{split_dir}: no image files")
            continue
        if not _has_class_folder_with_files(split_dir):
            raise PreflightError(
                "dataset.root",
                f"{split_dir}: no class folder with images (expected {split}/<class>/*)",
            )


def check_embedded_dataset(cfg: ExperimentConfig) -> None:
    """Generated on the fly; a set `root` is where it is written, which must be writable."""
    if cfg.dataset.root is not None:
        probe_local_dir(Path(cfg.dataset.root).expanduser(), "dataset.root")


def check_sharded_dataset(cfg: ExperimentConfig) -> None:
    """Parquet (Hugging Face layout) or WebDataset tars: each split has shards, and a Parquet
    split's first shard has the image and label columns. Remote roots answer within the limit."""
    from orchestrator.data import sources

    ds = cfg.dataset
    if ds.root is None:
        raise PreflightError("dataset.root", f"not set: pass --data-root <{ds.source} shards>")
    find = sources.parquet_shards if ds.source == "parquet" else sources.tar_shards
    kind = "`<split>-*.parquet`" if ds.source == "parquet" else "`<split>-*.tar`"

    def check() -> None:
        for split in (ds.train_split, ds.val_split):
            shards = find(ds.root, split)
            if not shards:
                raise PreflightError(
                    "dataset.root", f"{ds.root}: no {kind} shards for split `{split}`"
                )
            if ds.source == "parquet":
                try:
                    sources.check_image_schema(shards[0], sources.read_schema(shards[0]))
                except sources.SourceError as err:
                    raise PreflightError("dataset.root", str(err)) from None

    if ds.root.startswith(REMOTE_SCHEMES):
        _within(NETWORK_TIMEOUT_S, "dataset.root", ds.root, check)
    else:
        check()


# Another source joins by adding its check here: the preflight calls the one its config names.
DATASET_CHECKS: dict[str, Callable[[ExperimentConfig], None]] = {
    "folder": check_folder_dataset,
    "embedded": check_embedded_dataset,
    "parquet": check_sharded_dataset,
    "webdataset": check_sharded_dataset,
}


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------
def probe_local_dir(path: Path, what: str) -> None:
    """Write and delete a probe file in `path`, or in its nearest existing parent when `path`
    does not exist yet (the run creates it; the preflight leaves no folder behind)."""
    target = path
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        raise PreflightError(what, f"{path}: {target} is not a folder")
    probe = target / f".ldm-preflight-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as err:
        raise PreflightError(what, f"{path}: not writable ({err.strerror or err})") from None


def _within(seconds: float, what: str, where: str, action: Callable[[], None]) -> None:
    """Run `action` in a daemon thread; a hang past `seconds` is a one-line error, not a wait."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported as one line below
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise PreflightError(what, f"{where}: no answer within {seconds:.0f} s")
    if outcome[0] is not None:
        err = outcome[0]
        message = " ".join(str(err).split()) or type(err).__name__
        raise PreflightError(what, f"{where}: {message[:300]}")


def check_storage(uri: str) -> None:
    if not uri.startswith(REMOTE_SCHEMES):
        probe_local_dir(Path(uri).expanduser(), "storage")
        return

    def write_and_delete() -> None:
        import posixpath

        import pyarrow.fs as pafs

        filesystem, root = pafs.FileSystem.from_uri(uri)
        probe = posixpath.join(root.rstrip("/"), f".ldm-preflight-{uuid.uuid4().hex[:8]}")
        with filesystem.open_output_stream(probe) as stream:
            stream.write(b"probe")
        filesystem.delete_file(probe)

    _within(NETWORK_TIMEOUT_S, "storage", uri, write_and_delete)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------
def check_tracking(uri: str | None) -> None:
    """An HTTP tracking server must answer `/health`; a local SQLite store lives under storage
    (probed there) or at a path whose folder must be writable."""
    if not uri:
        return
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        def ask() -> None:
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=NETWORK_TIMEOUT_S)
            except urllib.error.HTTPError as err:
                # An auth-protected server answers 401/403; anything else is not MLflow's /health.
                if err.code not in (401, 403):
                    raise RuntimeError(
                        f"does not answer as an MLflow server (HTTP {err.code} at /health)"
                    ) from None
            except urllib.error.URLError as err:
                raise RuntimeError(f"not reachable ({err.reason})") from None

        _within(NETWORK_TIMEOUT_S + 1, "tracking.tracking_uri", uri, ask)
    elif uri.startswith("sqlite:///"):
        probe_local_dir(Path(uri.removeprefix("sqlite:///")).parent, "tracking.tracking_uri")


# --------------------------------------------------------------------------------------------
def preflight(configs: Iterable[ExperimentConfig], dry_run: bool = False) -> list[str]:
    """Every distinct dataset, storage and tracking target of the sweep's points, once each.

    A dry run may plan a space away from its data (the shipped paper spaces leave
    `dataset.root` unset): there an unset root is returned as a note instead of refused; what is
    set is checked as for a run. Returns the notes to print under the plan."""
    configs = list(configs)
    notes: list[str] = []
    seen: set[object] = set()
    for cfg in configs:
        if cfg.dataset not in seen:
            seen.add(cfg.dataset)
            if dry_run and cfg.dataset.root is None and cfg.dataset.source != "embedded":
                notes.append("preflight: dataset.root not set (a run needs --data-root)")
                continue
            DATASET_CHECKS[cfg.dataset.source](cfg)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    for cfg in {(c.storage, c.tracking.tracking_uri or env_uri): c for c in configs}.values():
        tracking = cfg.tracking.tracking_uri or env_uri
        if cfg.storage.startswith(REMOTE_SCHEMES) and not tracking:
            raise PreflightError(
                "tracking.tracking_uri",
                f"storage {cfg.storage} is an object store: pass --tracking-uri (an MLflow server)",
            )
    for uri in dict.fromkeys(c.storage for c in configs):
        check_storage(uri)
    for uri in dict.fromkeys(c.tracking.tracking_uri or env_uri for c in configs):
        check_tracking(uri)
    return notes
