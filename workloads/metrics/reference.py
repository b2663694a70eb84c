"""Reference statistics: ADM-style ``.npz`` files and a keyed on-disk cache.

Names map onto ADM's reference batches: ``pool`` <-> ``mu``/``sigma`` (pool3, FID) and ``spatial``
<-> ``mu_s``/``sigma_s`` (sFID); any other feature space ``name`` is stored as ``mu_<name>`` /
``sigma_<name>``. Our cache files therefore use the same layout as ADM's and load the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from workloads.metrics.frechet import FeatureStats

_ADM_KEYS = {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}
_CACHE_KEY_FIELD = "cache_key"


def _npz_keys(name: str) -> tuple[str, str]:
    return _ADM_KEYS.get(name, (f"mu_{name}", f"sigma_{name}"))


def _stats_from_npz(data: Mapping[str, np.ndarray]) -> dict[str, FeatureStats]:
    stats = {}
    for key in data:
        if key == "mu" or key.startswith("mu_"):
            name = {"mu": "pool", "mu_s": "spatial"}.get(key, key.removeprefix("mu_"))
            mu_key, sigma_key = _npz_keys(name)
            stats[name] = FeatureStats(
                mu=data[mu_key].astype(np.float64), sigma=data[sigma_key].astype(np.float64)
            )
    return stats


@dataclasses.dataclass(frozen=True)
class ReferenceBatch:
    """What an ADM reference batch (e.g. ``VIRTUAL_imagenet256_labeled.npz``) holds.

    ``stats``: ``pool`` (``mu``/``sigma``, FID) and ``spatial`` (``mu_s``/``sigma_s``, sFID) as
    stored, computed by ADM over the whole dataset; ``images``: ``arr_0``, the 10K random images
    ADM's precision/recall compares against (N x H x W x 3 uint8).
    """

    stats: dict[str, FeatureStats]
    images: np.ndarray


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array name -> shape of an ``.npz``, read from the .npy headers (nothing is loaded)."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as file:
                major, _ = np.lib.format.read_magic(file)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = read_header(file)
            shapes[member.removesuffix(".npy")] = shape
    return shapes


def check_reference_batch(path: Path, num_images: int) -> None:
    """One-line ValueError naming `path` and what is missing, unless it is an ADM reference batch
    with ``mu``/``sigma``, ``mu_s``/``sigma_s`` and ``arr_0`` holding at
    least `num_images` images (the precision/recall reference)."""
    try:
        shapes = _npz_shapes(Path(path))
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz reference batch ({error})") from None
    has = ", ".join(sorted(shapes)) or "no arrays"
    missing = [key for key in ("arr_0", "mu", "sigma", "mu_s", "sigma_s") if key not in shapes]
    if missing:
        raise ValueError(
            f"{path}: not an ADM reference batch: lacks {', '.join(missing)} (arr_0 = reference "
            f"images, mu/sigma = FID statistics, mu_s/sigma_s = sFID statistics); has {has}"
        )
    images = shapes["arr_0"]
    if len(images) != 4 or images[-1] != 3:
        raise ValueError(f"{path}: arr_0 has shape {images}, not N x H x W x 3 images")
    if images[0] < num_images:
        raise ValueError(
            f"{path}: arr_0 holds {images[0]:,} images, fewer than the {num_images:,} reference "
            "images precision/recall compares against"
        )


def load_reference_batch(
    path: Path, num_images: int, max_images: int | None = None
) -> ReferenceBatch:
    """The statistics and images of an ADM reference batch that holds at least `num_images`
    images (checked first); at most the first `max_images` images are read into memory."""
    check_reference_batch(path, num_images)
    with np.load(path) as data:
        images = data["arr_0"] if max_images is None else data["arr_0"][:max_images]
        return ReferenceBatch(stats=_stats_from_npz(data), images=images)


def save_reference_npz(path: Path, stats: Mapping[str, FeatureStats], cache_key: str = "") -> None:
    """Write statistics atomically in the ADM layout (plus the cache key that produced them)."""
    arrays = {_CACHE_KEY_FIELD: np.array(cache_key)}
    for name, feature_stats in stats.items():
        mu_key, sigma_key = _npz_keys(name)
        arrays[mu_key], arrays[sigma_key] = feature_stats.mu, feature_stats.sigma
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    with os.fdopen(handle, "wb") as file:
        np.savez(file, **arrays)
    os.replace(staging, path)


def reference_stats(
    cache_dir: Path,
    key: str,
    compute_fn: Callable[[], Mapping[str, np.ndarray]],
) -> dict[str, FeatureStats]:
    """Statistics for `key`, computed once by `compute_fn` (name -> (N, D) features) and cached.

    `key` must name both the data and the evaluator, e.g. ``f"{dataset_identity}/val|{evaluator}"``:
    the same images through another network (or other weights) are a different reference.
    """
    path = Path(cache_dir) / f"ref-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            if str(data[_CACHE_KEY_FIELD]) != key:
                raise ValueError(f"{path} was written for key {str(data[_CACHE_KEY_FIELD])!r}")
            return _stats_from_npz(data)
    stats = {name: FeatureStats.from_features(f) for name, f in compute_fn().items()}
    save_reference_npz(path, stats, cache_key=key)
    return stats
