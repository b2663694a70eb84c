"""Distributed training of both workloads on Ray Train V2 + DeepSpeed ZeRO.

Driver API (for the sweep):
    train_tokenizer(cfg, storage, ingested, *, run_ref=None, callbacks=None) -> TrainResult
    train_generator(cfg, storage, cache_manifest, *, run_ref=None, callbacks=None) -> TrainResult
Worker entry point: `train_loop_per_worker(config)` (`loop.py`).
"""

from orchestrator.train.driver import TrainResult, fit_stage, train_generator, train_tokenizer
from orchestrator.train.guard import NonFiniteError
from orchestrator.train.hooks import DebugHooks
from orchestrator.train.loop import train_loop_per_worker

__all__ = [
    "DebugHooks",
    "NonFiniteError",
    "TrainResult",
    "fit_stage",
    "train_generator",
    "train_loop_per_worker",
    "train_tokenizer",
]
