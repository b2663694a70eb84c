"""The data plane on Ray Data: ingestion, decoded images, the latent cache and its reader.

ingest(cfg, storage) -> IngestResult                 validated index + skip report (stage)
image_dataset(ingested, cfg, split, limit=None, view="adm")   decoded images (streaming)
image_stream(ingested, cfg) -> TrainStream           the tokenizer's training rows
build_latent_cache(cfg, storage, ingested, weights, identity) -> CacheManifest   (stage)
latent_stream(manifest_or_dir, identity, seed) -> TrainStream   the generator's rows
TrainStream.datasets(layout, start_step, end_step)   one Ray Dataset per rank (stream.py)
LatentBatchSampler(stats, flip=True)(batch, generator) -> (z, label)   worker side
"""

from orchestrator.data.cache import build_latent_cache
from orchestrator.data.images import StaleIndexError, image_dataset, image_stream
from orchestrator.data.ingest import IngestError, IngestResult, ingest
from orchestrator.data.manifest import (
    CacheManifest,
    TokenizerMismatchError,
    load_manifest,
    tokenizer_identity,
)
from orchestrator.data.reader import latent_stream
from orchestrator.data.sampler import LatentBatchSampler
from orchestrator.data.stream import StreamLayout, TrainStream

__all__ = [
    "CacheManifest",
    "IngestError",
    "IngestResult",
    "LatentBatchSampler",
    "StaleIndexError",
    "StreamLayout",
    "TokenizerMismatchError",
    "TrainStream",
    "build_latent_cache",
    "image_dataset",
    "image_stream",
    "ingest",
    "latent_stream",
    "load_manifest",
    "tokenizer_identity",
]
