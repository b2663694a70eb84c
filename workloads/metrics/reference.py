"""Reference statistics: ADM-style ``.npz`` files and a keyed on-disk cache.

Names map onto ADM's reference batches: ``pool`` <-> ``mu``/``sigma`` (pool3, FID) and ``spatial``
<-> ``mu_s``/``sigma_s`` (sFID); any other feature space ``name`` is stored as ``mu_<name>`` /
``sigma_<name>``. Our cache files therefore use the same layout as ADM's and load the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def load_reference_npz(
    path: Path,
    extract_fn: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
) -> dict[str, FeatureStats]:
    """Load ``mu``/``sigma`` (and ``mu_s``/``sigma_s``) from an ADM-style reference ``.npz``.

    ADM also ships plain image batches (``arr_0``: N x H x W x 3 uint8); for those, `extract_fn`
    maps the images to named feature arrays and the statistics are computed here.
    """
    with np.load(path) as data:
        stats = _stats_from_npz(data)
        if stats:
            return stats
        if "arr_0" not in data:
            raise ValueError(f"{path} has neither mu/sigma nor arr_0 (keys: {sorted(data.keys())})")
        if extract_fn is None:
            raise ValueError(
                f"{path} holds raw images (arr_0); pass extract_fn to compute statistics"
            )
        images = data["arr_0"]
    return {name: FeatureStats.from_features(f) for name, f in extract_fn(images).items()}


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
