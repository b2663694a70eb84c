"""The data plane on Ray Data: ingestion, decoded images, the latent cache and its reader.

ingest(cfg, storage) -> IngestResult                 validated index + skip report (stage)
image_dataset(ingested, cfg, split, limit=None)      decoded ADM-cropped images (streaming)
build_latent_cache(cfg, storage, ingested, weights, identity) -> CacheManifest   (stage)
latent_dataset(manifest_or_dir, identity, seed, start_epoch=0)   shards for TorchTrainer
LatentBatchSampler(stats, flip=True)(batch, generator) -> (z, label)   worker side
"""

from orchestrator.data.cache import build_latent_cache
from orchestrator.data.images import StaleIndexError, image_dataset
from orchestrator.data.ingest import IngestError, IngestResult, ingest
from orchestrator.data.manifest import (
    CacheManifest,
    TokenizerMismatchError,
    load_manifest,
    tokenizer_identity,
)
from orchestrator.data.reader import (
    EpochFileShuffle,
    latent_dataset,
    latent_ingest_options,
    passes_per_execution,
)
from orchestrator.data.sampler import LatentBatchSampler

__all__ = [
    "CacheManifest",
    "EpochFileShuffle",
    "IngestError",
    "IngestResult",
    "LatentBatchSampler",
    "StaleIndexError",
    "TokenizerMismatchError",
    "build_latent_cache",
    "image_dataset",
    "ingest",
    "latent_dataset",
    "latent_ingest_options",
    "load_manifest",
    "passes_per_execution",
    "tokenizer_identity",
]
