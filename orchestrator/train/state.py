"""Checkpoint contents, save and restore, RNG streams, and the world-size-independent export.

One Ray checkpoint directory, assembled by Ray from every rank's local directory:

    deepspeed/engine/...            `engine.save_checkpoint`: model, optimizer (per-rank shards)
    deepspeed/latest
    train_state.json                rank 0: step, stage, data position, skipped steps, layout
    rng/rank_<r>.pt                 each rank: torch (+CUDA), numpy, python and named Generators
    extra/<name>.safetensors        rank 0: workload state outside the engine (the DiT's EMA)

A checkpoint is written only after all ranks agreed that every weight is finite.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from orchestrator.storage.artifacts import EXPORT_DIR
from orchestrator.storage.store import Storage

DEEPSPEED_DIR = "deepspeed"
# Every Ray checkpoint is its own directory, so one fixed DeepSpeed tag suffices.
ENGINE_TAG = "engine"
TRAIN_STATE = "train_state.json"
RNG_DIR = "rng"
EXTRA_DIR = "extra"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class Extra:
    """Workload state kept outside the engine (e.g. EMA weights) plus string metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


@dataclass
class TrainState:
    """Where training stands; `epoch` is the data epoch of the last step trained."""

    global_step: int = 0
    stage_index: int = 0
    stage_step: int = 0
    epoch: int = 0
    skipped_steps: int = 0
    # The layout that wrote the checkpoint: a different one on resume means re-sharding.
    world_size: int = 1
    zero_stage: int = 0
    # Which workload wrote it: a point's single Train run (`train/point.py`) checkpoints its
    # tokenizer, then its generator, into one run directory. None: written before this field.
    workload: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        return cls(**data)


# ------------------------------------------------------------------------------ RNG streams
def seed_everything(seed: int, generators: dict[str, torch.Generator]) -> None:
    """Seed python, numpy, torch (CPU and CUDA) and every named generator from `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    for offset, generator in enumerate(generators.values(), start=1):
        generator.manual_seed(seed + 7919 * offset)


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


# ------------------------------------------------------------------------------ save
def write_checkpoint(
    directory: Path,
    engine,
    state: TrainState,
    rank: int,
    generators: dict[str, torch.Generator],
    extras: dict[str, Extra],
) -> None:
    """This rank's part of a checkpoint (collective: every rank calls it); `extras` on rank 0."""
    # DeepSpeed writes the model states on rank 0 (ZeRO 0-2) or each rank (ZeRO-3) and the
    # optimizer shard of each rank; it synchronises the ranks itself.
    engine.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=ENGINE_TAG)
    (directory / RNG_DIR).mkdir(exist_ok=True)
    torch.save(capture_rng(generators), directory / RNG_DIR / f"rank_{rank:05d}.pt")
    if rank == 0:
        (directory / TRAIN_STATE).write_text(json.dumps(state.to_dict(), indent=2))
        (directory / EXTRA_DIR).mkdir(exist_ok=True)
        for name, extra in extras.items():
            save_file(
                _contiguous(extra.tensors),
                str(directory / EXTRA_DIR / f"{name}.safetensors"),
                metadata=extra.metadata,
            )


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


# ------------------------------------------------------------------------------ restore
def read_train_state(directory: Path) -> TrainState:
    return TrainState.from_dict(json.loads((directory / TRAIN_STATE).read_text()))


def checkpoint_state(checkpoint) -> TrainState:
    """The `TrainState` of a Ray checkpoint, read from its `train_state.json` alone (on object
    storage, without downloading the engine files)."""
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{TRAIN_STATE}") as stream:
        return TrainState.from_dict(json.loads(stream.read()))


def resumes_from(checkpoint, workload: str) -> bool:
    """Whether `workload` resumes from this Ray checkpoint: one it wrote, or one from before
    checkpoints named their workload. A point's single run (`train/point.py`) holds both
    workloads' checkpoints in one directory."""
    return checkpoint_state(checkpoint).workload in (None, workload)


def load_engine(engine, directory: Path) -> None:
    """Model and optimizer state of the same world size and ZeRO stage."""
    load_path, _ = engine.load_checkpoint(
        str(directory / DEEPSPEED_DIR), tag=ENGINE_TAG, load_lr_scheduler_states=False
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {directory / DEEPSPEED_DIR}")


def load_rng(directory: Path, rank: int, generators: dict[str, torch.Generator]) -> None:
    state = torch.load(directory / RNG_DIR / f"rank_{rank:05d}.pt", weights_only=False)
    restore_rng(state, generators)


def load_extra(directory: Path, name: str) -> Extra:
    with safe_open(str(directory / EXTRA_DIR / f"{name}.safetensors"), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        return Extra(tensors, handle.metadata() or {})


def consolidated_weights(directory: Path, zero_stage: int) -> Mapping[str, torch.Tensor]:
    """The full fp32 model state dict of a checkpoint, whatever world size wrote it.

    Every rank of a resume on another layout calls this, so it must not cost a rank the
    optimizer: the shards are memory-mapped (one copy in the host's page cache, shared by its
    ranks) and the Adam moments are never read. ZeRO-3 checkpoints give lazy views that
    `load_full_weights` materialises one tensor at a time; ZeRO-1/2 ones hold one fp32 copy of
    the parameters (DeepSpeed joins each group's partitions), which lives only until the
    model is built, as it would in any rank that holds the full model under ZeRO 0-2.
    """
    ds_dir = directory / DEEPSPEED_DIR
    if zero_stage == 0:
        # Without ZeRO, rank 0 saved the whole module in one file.
        states = torch.load(
            ds_dir / ENGINE_TAG / "mp_rank_00_model_states.pt",
            map_location="cpu",
            weights_only=False,
            mmap=True,
        )
        return states["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # lazy_mode: views over the memory-mapped fp32 partitions of every rank (DeepSpeed drops
    # each optimizer file's moments as it opens it); `.contiguous()` assembles one parameter.
    return get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=ENGINE_TAG, lazy_mode=True)


# ------------------------------------------------------------------------------ export
def write_export(
    storage_uri: str,
    run_rel: str,
    weights: dict[str, dict[str, torch.Tensor]],
    summary: dict,
) -> str:
    """Write `<run>/export/<name>.safetensors` + `summary.json`; returns the export URI."""
    storage = Storage.from_uri(storage_uri)
    staging = Path(tempfile.mkdtemp(prefix="export-"))
    try:
        for name, tensors in weights.items():
            save_file(_contiguous(tensors), str(staging / f"{name}.safetensors"))
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        storage.upload(staging, run_rel, EXPORT_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return storage.uri_for(run_rel, EXPORT_DIR)
