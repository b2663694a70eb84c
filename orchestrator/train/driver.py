"""The training driver: one Ray Train V2 `TorchTrainer` per workload run, resumable by name.

A run is named by its stage key and lives under the configured storage
(`<storage>/tokenizers/<key>/`, `<storage>/generators/<key>/`), so running the same config
again resumes from the run's latest checkpoint (Train V2 finds `checkpoint_manager_snapshot.json`
there), and a run whose `DONE.json` exists is not started at all. `train_point` trains a
point's tokenizer and generator in one run, in the generator's directory (`train/point.py`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import ray
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.config import ExperimentConfig, stage_keys, to_dict
from orchestrator.data.stream import StreamLayout, TrainStream
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget
from orchestrator.sweep import resources as policy
from orchestrator.train.guard import NonFiniteError
from orchestrator.train.hooks import DebugHooks
from orchestrator.train.inputs import (
    check_tokenizer_training,
    foundation_weights,
    perceptual_loss_weights,
)
from orchestrator.train.loop import train_loop_per_worker
from orchestrator.train.plan import (
    TrainPlan,
    epoch_steps,
    generator_stages,
    micro_batch_size,
    run_length,
    tokenizer_stages,
)
from orchestrator.train.point import PointFollowUp
from orchestrator.train.rendezvous import LoopbackTorchConfig
from orchestrator.train.state import resumes_from

# Train V2's controller takes a worker's report, and notices that a run ended, once per health
# check (2 s by default) while the reporting worker waits: every `log_every` report and every
# checkpoint cost a stage up to that long (17 s of a micro tokenizer's 20 under `ray job submit`,
# 8 reports). Train hands this variable from the process that starts a run (the trial) to the
# run's controller, so setting it here holds on a laptop and under a cluster job alike; a value
# the user set wins. A poll is one small call per worker.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.5"


@dataclass(frozen=True)
class TrainResult:
    """What a training stage produced.

    `export_dir`: URI of `export/` (weights as safetensors + summary.json); `metrics`: the last
    reported metrics; `steps`: optimizer steps done; `skipped`: the stage was already DONE and
    nothing ran; `completed`: False only when a debug hook stopped the run early.
    """

    export_dir: str | None
    metrics: dict
    steps: int
    skipped: bool
    completed: bool = True


def train_tokenizer(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    *,
    run_ref: dict | None = None,
    callbacks: list | None = None,
    hooks: DebugHooks | None = None,
    progress: str | None = None,
) -> TrainResult:
    """Train (or resume, or skip when DONE) the VA-VAE tokenizer of a resolved config.

    `ingested` is the `IngestResult` of the dataset; `run_ref` an MLflow `RunRef.to_dict()`
    that rank 0 logs per-step metrics into; `callbacks` are `ray.train.UserCallback`s.
    """
    done = finished_result(cfg, storage, "tokenizer")
    if done is not None:
        return done
    return _fit_tokenizer(
        cfg, storage, ingested, run_ref=run_ref, callbacks=callbacks, hooks=hooks, progress=progress
    )


def train_point(
    cfg: ExperimentConfig,
    storage: Storage,
    ingested,
    evaluator,
    *,
    run_ref: dict | None = None,
    callbacks: list | None = None,
    hooks: DebugHooks | None = None,
    progress: str | None = None,
) -> TrainResult:
    """The tokenizer, then in the same Train run and workers its evaluation, its latent cache
    and the generator (`train/point.py`); returns the tokenizer's result.

    The run lives in the generator's directory (`generators/<key>`): a rerun after an
    interruption resumes whichever workload it checkpointed last. The tokenizer's export and
    DONE marker are in `tokenizers/<key>`, the other stages' in theirs, as with one run each.
    The caller has checked `point.one_run_allowed` and holds the four stages' locks.
    """
    return _fit_tokenizer(
        cfg,
        storage,
        ingested,
        run_ref=run_ref,
        callbacks=callbacks,
        hooks=hooks,
        progress=progress,
        follow_up=PointFollowUp(ingested=ingested, evaluator=evaluator),
    )


def _fit_tokenizer(
    cfg, storage, ingested, *, follow_up: PointFollowUp | None = None, **options
) -> TrainResult:
    from orchestrator.data import image_stream

    check_tokenizer_training(cfg)
    return fit_stage(
        cfg,
        storage,
        "tokenizer",
        image_stream(ingested, cfg),
        inputs={
            "foundation_weights": foundation_weights(cfg, storage, ingested),
            "lpips_weights": perceptual_loss_weights(cfg),
        },
        run_dir=run_rel(cfg, "generator") if follow_up is not None else None,
        follow_up=follow_up,
        **options,
    )


def train_generator(
    cfg: ExperimentConfig,
    storage: Storage,
    cache_manifest,
    *,
    run_ref: dict | None = None,
    callbacks: list | None = None,
    hooks: DebugHooks | None = None,
    progress: str | None = None,
    stop_after_step: int | None = None,
    ingested=None,
) -> TrainResult:
    """Train (or resume, or skip when DONE) LightningDiT on a latent cache of this config.

    `cache_manifest` is the cache's `CacheManifest` (or its directory). `stop_after_step`
    trains only up to that step (a checkpoint, no export: `completed=False`); calling again
    with a later step, or none, continues from there. With `cache.mode: on_the_fly` the cache
    holds only the statistics' images: the workers encode the `ingested` training split.
    """
    done = finished_result(cfg, storage, "generator")
    if done is not None:
        return done
    stream, inputs = generator_input(cfg, storage, cache_manifest, ingested)
    return fit_stage(
        cfg,
        storage,
        "generator",
        stream,
        inputs=inputs,
        run_ref=run_ref,
        callbacks=callbacks,
        hooks=hooks,
        progress=progress,
        stop_after_step=stop_after_step,
    )


def generator_input(cfg: ExperimentConfig, storage: Storage, cache_manifest, ingested=None):
    """(TrainStream, workload inputs) of the generator: the latent cache of this config's
    tokenizer (both checked), or with `cache.mode: on_the_fly` the `ingested` training images."""
    from orchestrator.data import latent_stream, load_manifest, tokenizer_identity

    manifest = load_manifest(cache_manifest)
    keys = stage_keys(cfg)
    expected_cache = Artifacts.cache(keys.cache)
    if not manifest.cache_dir.rstrip("/").endswith(expected_cache):
        raise ValueError(
            f"latent cache {manifest.cache_dir} is not this config's cache ({expected_cache}): "
            "the generator's stage key would not describe the data it trains on"
        )
    # The cache must come from this config's tokenizer, as exported (key and weights' hash).
    expected_tokenizer = tokenizer_identity(
        keys.tokenizer, storage.uri_for(Artifacts.tokenizer_weights(keys.tokenizer))
    )
    stats = manifest.latent_stats(cfg.generator.latent_multiplier, cfg.generator.latent_norm)
    inputs = {"latent_stats": stats.to_dict()}
    if cfg.cache.mode == "on_the_fly":
        from orchestrator.data import image_stream
        from orchestrator.data.manifest import check_tokenizer
        from orchestrator.storage.models import tokenizer_spec

        check_tokenizer(manifest, expected_tokenizer)
        inputs["tokenizer"] = {
            "spec": dataclasses.asdict(tokenizer_spec(cfg)),
            "weights": storage.uri_for(Artifacts.tokenizer_weights(keys.tokenizer)),
        }
        return image_stream(ingested, cfg, crop="center"), inputs
    return latent_stream(manifest, expected_tokenizer, cfg.seed), inputs


def run_rel(cfg: ExperimentConfig, workload: str) -> str:
    """The run's directory under the storage root (`tokenizers/<key>`, `generators/<key>`)."""
    keys = stage_keys(cfg)
    return (
        Artifacts.tokenizer(keys.tokenizer)
        if workload == "tokenizer"
        else Artifacts.generator(keys.generator)
    )


def finished_result(cfg: ExperimentConfig, storage: Storage, workload: str) -> TrainResult | None:
    """The stored result when the run's DONE marker exists, else None."""
    artifacts = Artifacts(storage)
    rel = run_rel(cfg, workload)
    if not artifacts.is_done(rel):
        return None
    summary = artifacts.read_done(rel)
    return TrainResult(
        export_dir=summary["export_dir"],
        metrics=summary["metrics"],
        steps=summary["steps"],
        skipped=True,
    )


def latest_checkpoint(storage: Storage, workload: str, run_dir: str):
    """(metrics, checkpoint) of the latest checkpoint of the Train run in `run_dir`
    (`run_rel`), or (None, None) for a new run, and for one whose latest checkpoint another
    workload wrote (a point's single run checkpoints its tokenizer into the generator's
    directory, `train_point`)."""
    try:
        result = ray.train.Result.from_path(storage.uri_for(run_dir))
    except RuntimeError:  # no run there yet
        return None, None
    checkpoint = result.checkpoint
    if checkpoint is not None and not resumes_from(checkpoint, workload):
        return None, None
    return result.metrics or {}, checkpoint


def resume_step(storage: Storage, workload: str, run_dir: str) -> int:
    """The step of `workload`'s latest checkpoint in the run (0 for a new run): where its data
    resumes."""
    metrics, _ = latest_checkpoint(storage, workload, run_dir)
    return int((metrics or {}).get("step", 0))


def checkpoint_ema_weights(cfg: ExperimentConfig, storage: Storage) -> tuple[int, dict]:
    """(step, full EMA state dict) of the generator run's latest checkpoint: what an
    intermediate evaluation samples from while training goes on in rounds."""
    from pathlib import Path

    from orchestrator.storage.models import build_generator
    from orchestrator.train.generator import EMA_EXTRA
    from orchestrator.train.state import load_extra
    from workloads.dit import EMA

    metrics, checkpoint = latest_checkpoint(storage, "generator", run_rel(cfg, "generator"))
    if checkpoint is None:
        raise FileNotFoundError(
            f"the generator run of {stage_keys(cfg).generator} has no checkpoint"
        )
    with checkpoint.as_directory() as directory:
        shadow = load_extra(Path(directory), EMA_EXTRA).tensors
    ema = EMA(shadow.items())
    return int(metrics["step"]), ema.model_state_dict(build_generator(cfg))


@dataclass(frozen=True)
class PlannedRun:
    """A workload's `TrainPlan`, the Ray Datasets its ranks stream (none when each rank fetches
    its rows itself) and its worker count."""

    plan: TrainPlan
    datasets: dict
    num_workers: int


def plan_run(
    cfg: ExperimentConfig,
    storage: Storage,
    workload: str,
    stream: TrainStream,
    *,
    inputs: dict,
    start_step: int,
    run_ref: dict | None = None,
    hooks: DebugHooks | None = None,
    progress: str | None = None,
    stop_after_step: int | None = None,
    follow_up: PointFollowUp | None = None,
) -> PlannedRun:
    """What `train_loop_per_worker` needs for `workload` on `stream` (columns as the workload
    reads them: `image` for the tokenizer, cached moments + `label` for the generator), each
    rank reading its own rows from `start_step` on (`orchestrator/data/stream.py`)."""
    resources = cfg.resources
    training = cfg.tokenizer.training if workload == "tokenizer" else cfg.generator.training
    num_workers = (
        resources.tokenizer_workers if workload == "tokenizer" else resources.generator_workers
    )
    per_epoch = epoch_steps(stream.num_rows, training, num_workers)
    if per_epoch == 0:
        raise ValueError(
            f"{stream.num_rows} training rows give no full step of global batch "
            f"{training.global_batch_size} on {num_workers} workers"
        )
    stages = (
        tokenizer_stages(cfg, per_epoch)
        if workload == "tokenizer"
        else generator_stages(cfg, per_epoch)
    )
    micro_batch = micro_batch_size(training, num_workers)
    layout = StreamLayout(
        world_size=num_workers,
        micro_batch=micro_batch,
        accumulation=training.gradient_accumulation_steps,
    )
    end_step = run_length(stages)
    # Small data is fetched by each rank itself; the rest streams (`stream.py`).
    if stream.fits_in(resources.in_worker_data_mb):
        datasets, rank_rows = {}, stream.rank_rows(layout, start_step, end_step)
    else:
        datasets, rank_rows = stream.datasets(layout, start_step, end_step), None
    plan = TrainPlan(
        workload=workload,
        experiment=to_dict(cfg),
        stages=stages,
        micro_batch=micro_batch,
        storage_uri=storage.uri,
        run_rel=run_rel(cfg, workload),
        inputs=inputs,
        run_ref=run_ref,
        debug_hooks=(hooks or DebugHooks()).to_dict(),
        progress=progress,
        stop_after_step=stop_after_step,
        rank_rows=rank_rows,
        follow_up=follow_up,
    )
    return PlannedRun(plan, datasets, num_workers)


def trained_summary(outcome: dict, plan: TrainPlan) -> dict:
    """The DONE marker of a finished training run (what `finished_result` reads back)."""
    return {
        "export_dir": outcome["export_dir"],
        "metrics": outcome["metrics"],
        "steps": outcome["steps"],
        "skipped_steps": outcome["skipped_steps"],
        "stages": [dataclasses.asdict(stage) for stage in plan.stages],
    }


def fit_stage(
    cfg: ExperimentConfig,
    storage: Storage,
    workload: str,
    stream: TrainStream,
    *,
    inputs: dict,
    run_ref: dict | None = None,
    callbacks: list | None = None,
    hooks: DebugHooks | None = None,
    progress: str | None = None,
    stop_after_step: int | None = None,
    run_dir: str | None = None,
    follow_up: PointFollowUp | None = None,
) -> TrainResult:
    """Run `train_loop_per_worker` for `workload` on `stream` as one Ray Train run in
    `run_dir` (default: the workload's own, `run_rel`); with `follow_up` the same workers go on
    with the rest of the point (`train_point`)."""
    rel = run_rel(cfg, workload)
    run_dir = run_dir or rel
    planned = plan_run(
        cfg,
        storage,
        workload,
        stream,
        inputs=inputs,
        start_step=resume_step(storage, workload, run_dir),
        run_ref=run_ref,
        hooks=hooks,
        progress=progress,
        stop_after_step=stop_after_step,
        follow_up=follow_up,
    )
    resources = cfg.resources
    training = planned.plan.training()
    # The trial's share (`sweep/resources.py`): one slot per worker; never a GPU the cluster
    # lacks (a Train run waiting for unsatisfiable resources retries forever instead of failing).
    share = policy.share(cfg)
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S)
    options = DataConfig.default_ingest_options()
    # A rank's row order is what a resume reproduces: blocks are decoded in parallel but handed
    # to the rank in order.
    options.preserve_order = True
    root, name = run_dir.split("/", 1)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=planned.plan.to_dict(),
        # Simulated GPUs compute on the CPU, where NCCL cannot run.
        torch_config=LoopbackTorchConfig(backend="gloo" if policy.simulated() else None),
        scaling_config=ScalingConfig(
            num_workers=planned.num_workers,
            use_gpu=share.gpu,
            resources_per_worker=share.per_slot(),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage.uri_for(root),
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=training.keep_checkpoints),
            callbacks=callbacks,
        ),
        datasets=planned.datasets,
        # Each rank reads only its own dataset; none is split (see `stream.py` for why).
        dataset_config=DataConfig(
            datasets_to_split=[],
            execution_options={name: options for name in planned.datasets},
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.WorkerGroupError as err:
        # Surface the guard's own error (step and terms) rather than Ray's wrapper.
        for failure in err.worker_failures.values():
            if isinstance(failure, NonFiniteError):
                raise failure from err
        raise
    outcome = result.return_value
    # Seconds inside steps over all ranks, each rank holding one slot of the share.
    budget.record(outcome["compute_s"] * share.units)
    if "follow_up" in outcome:  # the point's later stages, timed in the workers
        budget.absorb(outcome["follow_up"])
    # A rerun that only had to export (its last checkpoint was the end) trained no step: the
    # metrics are then those of that checkpoint.
    metrics = outcome["metrics"] or result.metrics or {}
    if not outcome["completed"]:
        return TrainResult(None, metrics, outcome["steps"], skipped=False, completed=False)
    Artifacts(storage).mark_done(
        rel, trained_summary({**outcome, "metrics": metrics}, planned.plan)
    )
    return TrainResult(outcome["export_dir"], metrics, outcome["steps"], skipped=False)
