"""The latent cache's `manifest.json`: what made the cache, what it holds, how to normalise it.

It is written after the last shard and before the DONE marker, so its presence means every shard
listed in it exists. Readers check the tokenizer identity before touching a shard: latents of
another tokenizer decode to garbage without any error (LightningDiT issue #34's FID > 130).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch

from orchestrator.storage.store import Storage, open_input
from workloads.dit.latent_norm import LatentStats

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class TokenizerMismatchError(ValueError):
    """The cache was made by another tokenizer than the one configured."""


def file_sha256(path: str) -> str:
    """sha256 of a file given as a local path or a pyarrow-readable URI (s3://, gs://)."""
    digest = hashlib.sha256()
    with open_input(path) as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_identity(tokenizer_key: str, weights_path: str) -> str:
    """Identity of an exported tokenizer: its config hash plus its weights' content hash.

    Either alone is not enough: one config retrained on another machine gives other weights,
    and the same weights file may be exported from differently keyed runs.
    """
    return f"{tokenizer_key}+sha256:{file_sha256(weights_path)[:16]}"


@dataclass(frozen=True)
class CacheManifest:
    """Content of `manifest.json`; `cache_dir` is where it was read from (not stored)."""

    schema_version: int
    tokenizer: dict
    dataset: dict
    resolution: int
    latent_shape: list[int]
    dtype: str
    storage_dtype: str
    flip: bool
    count: int
    rows_per_shard: int
    shards: list[dict]
    columns: list[str]
    skipped: dict
    stats: dict
    cache_dir: str = field(default="", compare=False)

    @property
    def deterministic(self) -> bool:
        """Whether the cache holds a deterministic encoder's latents (RAE): means, no logvar."""
        return "logvar" not in self.columns

    @property
    def tokenizer_identity(self) -> str:
        return self.tokenizer["identity"]

    def shard_uris(self) -> list[str]:
        return [f"{self.cache_dir}/{shard['file']}" for shard in self.shards]

    def latent_stats(self, multiplier: float = 1.0, normalise: bool = True) -> LatentStats:
        """The generator's latent scaling: `z_in = (z - mean) / std * multiplier` with this cache's
        per-channel statistics, or, with `normalise=False` (`generator.latent_norm: false`),
        `z_in = z * multiplier` alone (the SD-VAE / DiT convention, e.g. multiplier 0.18215)."""
        if not normalise:
            channels = len(self.stats["mean"])
            return LatentStats(torch.zeros(channels), torch.ones(channels), multiplier)
        return LatentStats(self.stats["mean"], self.stats["std"], multiplier)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("cache_dir")
        return data

    @classmethod
    def from_dict(cls, data: dict, cache_dir: str) -> CacheManifest:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"latent cache {cache_dir} has manifest schema {data.get('schema_version')}, "
                f"this code reads {SCHEMA_VERSION}: rebuild the cache"
            )
        names = [f.name for f in dataclasses.fields(cls) if f.name != "cache_dir"]
        return cls(**{name: data[name] for name in names}, cache_dir=cache_dir.rstrip("/"))


def load_manifest(manifest_or_dir: CacheManifest | str) -> CacheManifest:
    """A manifest object as is, or the manifest of a cache directory (local path or URI)."""
    if isinstance(manifest_or_dir, CacheManifest):
        return manifest_or_dir
    storage = Storage.from_uri(str(manifest_or_dir))
    if not storage.exists(MANIFEST):
        raise FileNotFoundError(
            f"no {MANIFEST} in {storage.uri}: not a latent cache, or its build has not finished"
        )
    return CacheManifest.from_dict(storage.read_json(MANIFEST), storage.uri)


def check_tokenizer(manifest: CacheManifest, expected_identity: str) -> None:
    """Raise `TokenizerMismatchError` naming both identities unless they are equal."""
    if manifest.tokenizer_identity != expected_identity:
        raise TokenizerMismatchError(
            f"latent cache {manifest.cache_dir} was encoded by tokenizer "
            f"{manifest.tokenizer_identity}, but the configured tokenizer is {expected_identity}; "
            "rebuild the cache with this tokenizer (or point at the matching cache)"
        )
