"""The data plane on Ray Data: ingestion, decoded images, the latent cache and its reader.

ingest(cfg, storage) -> IngestResult                 validated index + skip report (stage)
indexed_images(ingested, cfg, split, limit=None, view="adm")   decoded images: .dataset()
                                                     streams them, .batches() decodes here
image_stream(ingested, cfg) -> TrainStream           the tokenizer's training rows
build_latent_cache(cfg, storage, ingested, weights, identity) -> CacheManifest   (stage)
latent_stream(manifest_or_dir, identity, seed) -> TrainStream   the generator's rows
TrainStream.datasets(layout, start_step, end_step)   one Ray Dataset per rank (stream.py)
LatentBatchSampler(stats, flip=True)(batch, generator) -> (z, label)   worker side

The names are imported on first use, not with the package: a Ray Data task that runs one
function of one module here (a training stream's row fetch, a file check) unpickles it in a
fresh worker process, which imports this package first; eager re-exports would load torch and
the cache encoder there for nothing (about 2 s of CPU per process on 2 cores).
"""

from __future__ import annotations

import importlib

# Bound now: the function shares its module's name, and importing the submodule (as images.py
# does) would otherwise leave the package attribute pointing at the module. It loads no torch.
from orchestrator.data.ingest import IngestError as IngestError
from orchestrator.data.ingest import IngestResult as IngestResult
from orchestrator.data.ingest import ingest as ingest

_HOMES = {
    "build_latent_cache": "cache",
    "StaleIndexError": "images",
    "indexed_images": "images",
    "image_stream": "images",
    "CacheManifest": "manifest",
    "TokenizerMismatchError": "manifest",
    "load_manifest": "manifest",
    "tokenizer_identity": "manifest",
    "latent_stream": "reader",
    "LatentBatchSampler": "sampler",
    "StreamLayout": "stream",
    "TrainStream": "stream",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
