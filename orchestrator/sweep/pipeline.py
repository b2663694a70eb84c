"""One frontier point, end to end: the five stages in order, each skipped when already done.

    ingest -> tokenizer training -> tokenizer evaluation -> latent cache
           -> generator training -> generator evaluation

A tokenizer or generator from outside (`*.pretrained`) is imported in place of its training;
a pretrained generator needs no latent cache.

Each stage is addressed by its config hash (`stage_keys`) and guarded by a stage lock, so points
that share a tokenizer share its training, evaluation and cache. Everything a point produces is
logged into its MLflow run: params, per-step metrics (from rank 0 of the Train runs), final
metrics with their labels and evaluation spec, and the reconstruction and sample grids.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config import (
    ExperimentConfig,
    dump_yaml,
    point_label,
    stage_keys,
    to_dict,
)
from orchestrator.evaluation.evaluators import EvaluatorSpec, prepare_evaluator
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget, progress, resources
from orchestrator.sweep.locks import stage_lock
from orchestrator.sweep.tracking import RunLogger, RunRef

log = logging.getLogger("ldm_frontier.pipeline")


@dataclass(frozen=True)
class SharedInputs:
    """Per-dataset inputs every point needs: built once, before trials race for them."""

    ingested: object
    evaluator: EvaluatorSpec


def prepare_shared(cfg: ExperimentConfig, storage: Storage) -> SharedInputs:
    """Ingest the dataset, train the stand-in foundation model and the evaluator network if the
    config needs them; every piece is cached, so calling this again is cheap."""
    from orchestrator.data import ingest
    from orchestrator.train.inputs import foundation_weights

    ingested = ingest(cfg, storage)
    cfg = with_dataset_classes(cfg, ingested)
    if cfg.tokenizer.vf.foundation == "standin":
        foundation_weights(cfg, storage, ingested)
    evaluator = prepare_evaluator(cfg, storage, ingested.root, ingested.dataset_key)
    return SharedInputs(ingested, evaluator)


def with_dataset_classes(cfg: ExperimentConfig, ingested) -> ExperimentConfig:
    """Fill `dataset.num_classes` from the ingest when the config left it to the folders."""
    if cfg.dataset.num_classes is not None:
        if cfg.dataset.num_classes != ingested.num_classes:
            raise ValueError(
                f"dataset.num_classes is {cfg.dataset.num_classes} but {ingested.root} has "
                f"{ingested.num_classes} classes"
            )
        return cfg
    return replace(cfg, dataset=replace(cfg.dataset, num_classes=ingested.num_classes))


def flat_params(data: dict, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: every resolved key becomes an MLflow param."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_stored_file(logger: RunLogger, storage: Storage, uri: str, artifact_path: str) -> None:
    """Log a file that lives in storage (local path or object store URI) as an MLflow artifact."""
    if not logger.enabled:
        return
    if storage.is_local:
        logger.log_artifact(uri, artifact_path)
        return
    rel = uri.removeprefix(storage.uri).lstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(rel).name
        local.write_bytes(storage.read_bytes(rel))
        logger.log_artifact(local, artifact_path)


def log_json(logger: RunLogger, obj: object, name: str, artifact_path: str) -> None:
    import json

    if not logger.enabled:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str))
        logger.log_artifact(path, artifact_path)


def run_point(
    cfg: ExperimentConfig,
    storage: Storage,
    *,
    run_ref: RunRef | None = None,
    overrides: dict | None = None,
    callbacks: list | None = None,
    on_intermediate: Callable[[dict[str, float]], None] | None = None,
    tokenizer_only: bool = False,
    own_tokenizer: bool = False,
) -> dict[str, float]:
    """Run (or finish, or just read back) every stage of one point; returns its final metrics.

    `tokenizer_only` stops after the tokenizer evaluation (a pruned sweep's first phase).
    `own_tokenizer`: no other point of the sweep uses this point's tokenizer, so its training
    may go on into the later stages in one Train run (`train/point.py`).

    With `on_intermediate` and `evaluation.intermediate_every` > 0 the generator trains in rounds
    and each round's `fd_intermediate` goes to `on_intermediate` (Tune's report, for ASHA).
    """
    from orchestrator.data import build_latent_cache, tokenizer_identity
    from orchestrator.evaluation.jobs import evaluate_generator, evaluate_tokenizer
    from orchestrator.storage.pretrained import import_generator, import_tokenizer
    from orchestrator.train.driver import (
        finished_result,
        train_generator,
        train_point,
        train_tokenizer,
    )
    from orchestrator.train.point import one_run_allowed

    name = point_label(cfg)
    logger = RunLogger(run_ref)
    logger.log_params(
        {**flat_params(to_dict(cfg)), **{f"sweep.{k}": v for k, v in (overrides or {}).items()}}
    )
    log_json(logger, dump_yaml(cfg), "resolved_config.yaml", "config")
    ref = run_ref.to_dict() if run_ref else None

    with budget.point_ledger() as ledger:

        def stage(title: str) -> None:
            ledger.start(title)
            progress.post(name, state="running", stage=title, step=None, total=None)
            log.info("%s: %s", name, title)

        try:
            stage("ingest")
            shared = prepare_shared(cfg, storage)
            cfg = with_dataset_classes(cfg, shared.ingested)
            keys = stage_keys(cfg)
            resources.record_placement("trial", resources.point_id(cfg), phase="start")
            logger.set_tags({f"ldm.key.{part}": key for part, key in keys.as_dict().items()})

            stage("tokenizer")
            one_run = one_run_allowed(
                cfg,
                own_tokenizer=own_tokenizer,
                tokenizer_only=tokenizer_only,
                rounds=on_intermediate is not None and bool(intermediate_steps(cfg)),
            )
            with stage_lock(keys.tokenizer):
                if cfg.tokenizer.pretrained is not None:
                    import_tokenizer(cfg, storage)
                elif one_run and finished_result(cfg, storage, "tokenizer") is None:
                    with (
                        stage_lock(keys.tokenizer_eval),
                        stage_lock(keys.cache),
                        stage_lock(keys.generator),
                    ):
                        train_point(
                            cfg,
                            storage,
                            shared.ingested,
                            shared.evaluator,
                            run_ref=ref,
                            callbacks=callbacks,
                            progress=name,
                        )
                else:
                    train_tokenizer(
                        cfg,
                        storage,
                        shared.ingested,
                        run_ref=ref,
                        callbacks=callbacks,
                        progress=name,
                    )
            tokenizer_weights = storage.uri_for(Artifacts.tokenizer_weights(keys.tokenizer))

            stage("tokenizer eval")
            with stage_lock(keys.tokenizer_eval):
                recon = evaluate_tokenizer(
                    cfg, storage, shared.ingested, tokenizer_weights, shared.evaluator
                )
            logger.log_metrics(recon["metrics"])
            if cfg.tracking.log_images:
                log_stored_file(logger, storage, recon["grid"], "tokenizer")
            log_json(logger, recon["spec"], "tokenizer_eval_spec.json", "tokenizer")
            if tokenizer_only:
                timings = ledger.stop()
                logger.log_metrics(timings)
                progress.post(name, state="done", stage="tokenizer eval")
                return {**recon["metrics"], **timings}

            manifest = None
            if cfg.generator.pretrained is None:
                stage("latent cache")
                identity = tokenizer_identity(keys.tokenizer, tokenizer_weights)
                with stage_lock(keys.cache):
                    manifest = build_latent_cache(
                        cfg, storage, shared.ingested, tokenizer_weights, identity
                    )

            stage("generator")
            # The first round's score, a generation proxy (correlated with the final metric).
            rounds: dict[str, float] = {}
            train = dict(run_ref=ref, callbacks=callbacks, progress=name, ingested=shared.ingested)
            with stage_lock(keys.generator):
                if manifest is None:
                    # A generator from outside brings its latent statistics: no cache, no training.
                    latent_stats = import_generator(cfg, storage)
                else:
                    latent_stats = manifest.latent_stats(
                        cfg.generator.latent_multiplier, cfg.generator.latent_norm
                    ).to_dict()
                    for step in intermediate_steps(cfg) if on_intermediate is not None else []:
                        metrics = generator_round(
                            cfg,
                            storage,
                            shared,
                            manifest,
                            step,
                            tokenizer_weights,
                            latent_stats,
                            train,
                        )
                        if metrics is not None:
                            logger.log_metrics(
                                {"fd_intermediate": metrics["fd_intermediate"]}, step
                            )
                            rounds.setdefault("fd_first_round", metrics["fd_intermediate"])
                            on_intermediate(metrics)
                    train_generator(cfg, storage, manifest, **train)

            stage("generator eval")
            with stage_lock(keys.generator_eval):
                gen = evaluate_generator(
                    cfg,
                    storage,
                    shared.ingested,
                    generator_weights=storage.uri_for(
                        Artifacts.generator_ema_weights(keys.generator)
                    ),
                    tokenizer_weights=tokenizer_weights,
                    latent_stats=latent_stats,
                    evaluator=shared.evaluator,
                )
            logger.log_metrics({**gen["metrics"], **rounds})
            logger.set_tags(
                {f"ldm.label.{k}": v for k, v in {**recon["labels"], **gen["labels"]}.items()}
            )
            if cfg.tracking.log_images:
                log_stored_file(logger, storage, gen["grid"], "generator")
            log_json(logger, gen["spec"], "eval_spec.json", "generator")
        except BaseException:
            progress.post(name, state="failed")
            raise
    timings = ledger.stop()
    logger.log_metrics(timings)
    log.info("%s: stage seconds (wall, compute) %s", name, timings)
    progress.post(name, state="done", stage="done")
    resources.record_placement("trial", resources.point_id(cfg), phase="end")
    return {**recon["metrics"], **gen["metrics"], **rounds, **timings}


def intermediate_steps(cfg: ExperimentConfig) -> list[int]:
    """Generator steps at which a round ends for an intermediate evaluation (the last round,
    up to the final step, is the ordinary run and its full evaluation)."""
    every = cfg.evaluation.intermediate_every
    if every <= 0:
        return []
    return list(range(every, cfg.generator.training.steps, every))


def generator_round(
    cfg: ExperimentConfig,
    storage: Storage,
    shared: SharedInputs,
    manifest,
    step: int,
    tokenizer_weights: str,
    latent_stats: dict,
    train: dict,
) -> dict[str, float] | None:
    """Train the generator up to `step` (resuming), then score its EMA at that step.

    None when the step cannot be scored any more: the run already went past it without a stored
    score (say, it finished before the sweep turned ASHA on).
    """
    from orchestrator.evaluation.jobs import (
        intermediate_generator_metric,
        stored_intermediate_metric,
    )
    from orchestrator.train.driver import (
        checkpoint_ema_weights,
        finished_result,
        resume_step,
        run_rel,
        train_generator,
    )

    key = stage_keys(cfg).generator
    scored = stored_intermediate_metric(cfg, storage, step)
    if scored is not None:
        return scored
    if finished_result(cfg, storage, "generator") is not None:
        return None
    reached = resume_step(storage, "generator", run_rel(cfg, "generator"))
    if reached > step:
        return None
    if reached < step:
        train_generator(cfg, storage, manifest, stop_after_step=step, **train)
    at, ema_state = checkpoint_ema_weights(cfg, storage)
    if at != step:
        raise RuntimeError(f"generator {key}: round to step {step} ended at step {at}")
    return intermediate_generator_metric(
        cfg,
        storage,
        shared.ingested,
        step=step,
        ema_state=ema_state,
        tokenizer_weights=tokenizer_weights,
        latent_stats=latent_stats,
        evaluator=shared.evaluator,
    )
