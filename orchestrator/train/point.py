"""A point in one Train run: the tokenizer, then in the same workers its evaluation, its latent
cache and the generator.

Every Train run costs about 13 core-seconds before and after its steps whatever its length: a
controller, a placement group and its cleaner, a synchronization actor, a dataset manager, and
workers importing torch, Ray Train and DeepSpeed. On a small run that is more than the debug
preset's generator computes, paid twice per point (issue 16). When one trial runs the four
stages back to back and would evaluate and cache in its own process anyway (pools of size 0),
the tokenizer's workers go on instead: rank 0 calls the same stage functions, which write the
same outputs and DONE markers, and every rank then trains the generator. The trial afterwards
finds each stage done and reads it back, as a rerun would.

The run lives in the generator's directory (`generators/<key>`) and checkpoints the tokenizer,
then the generator, there; `train_state.json` names the workload, and a workload resumes only
from its own checkpoints. Interrupted during the tokenizer, a rerun resumes it in this run;
interrupted later, the tokenizer is done and the remaining stages run as they would have
without this path, the generator resuming from its latest checkpoint in the same directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.config import ExperimentConfig

if TYPE_CHECKING:
    from orchestrator.data.ingest import IngestResult
    from orchestrator.evaluation.evaluators import EvaluatorSpec
    from orchestrator.train.plan import TrainPlan


@dataclass(frozen=True)
class PointFollowUp:
    """What the tokenizer's workers need for the rest of the point."""

    ingested: IngestResult
    evaluator: EvaluatorSpec


def one_run_allowed(
    cfg: ExperimentConfig, *, own_tokenizer: bool, tokenizer_only: bool, rounds: bool
) -> bool:
    """Whether a point whose tokenizer is still to train may train it in one run with the rest.

    Only when nothing else needs the stages in between: no other point of the sweep shares the
    tokenizer (it would wait for this point's generator), the generator follows now (not a
    pruned sweep's first phase, not in ASHA's rounds), nothing is imported, and the evaluation
    and the cache run in one process without pools (on a GPU cluster they keep their actors).
    """
    r = cfg.resources
    return (
        own_tokenizer
        and not tokenizer_only
        and not rounds
        and cfg.tokenizer.pretrained is None
        and cfg.generator.pretrained is None
        and cfg.evaluation.num_workers == 0
        and cfg.cache.num_actors == 0
        and r.tokenizer_workers == r.generator_workers
    )


def train_point_here(plan: TrainPlan, train: Callable[[TrainPlan], dict]) -> dict:
    """On every rank of the point's run: `train` the tokenizer (`plan`), then the rest of the
    point; returns the tokenizer's outcome with the later stages' timings (`follow_up`)."""
    import ray.train

    from orchestrator.storage.artifacts import Artifacts
    from orchestrator.storage.store import Storage
    from orchestrator.train.driver import trained_summary

    rank = ray.train.get_context().get_world_rank()
    artifacts = Artifacts(Storage.from_uri(plan.storage_uri))
    if artifacts.is_done(plan.run_rel):
        # Ray restarted the workers after the tokenizer had finished.
        summary = artifacts.read_done(plan.run_rel)
        outcome = {**summary, "completed": True, "compute_s": 0.0}
    else:
        outcome = train(plan)
        if not outcome["completed"]:  # a debug hook stopped the run
            return outcome
        if rank == 0:
            # Before anything else: a rerun must find the tokenizer done, not train it again.
            artifacts.mark_done(plan.run_rel, trained_summary(outcome, plan))
    return {**outcome, "follow_up": _rest_of_point(plan, train, rank)}


def _rest_of_point(plan: TrainPlan, train: Callable[[TrainPlan], dict], rank: int) -> dict:
    """Tokenizer evaluation and latent cache on rank 0, then the generator on every rank;
    `time/<stage>_s` and `compute/<stage>_s` of each (`sweep/budget.py`)."""
    import ray.train
    import torch.distributed as dist

    from orchestrator.config import stage_keys
    from orchestrator.data import build_latent_cache, tokenizer_identity
    from orchestrator.evaluation.jobs import evaluate_tokenizer
    from orchestrator.storage.artifacts import Artifacts
    from orchestrator.storage.store import Storage
    from orchestrator.sweep import budget, progress
    from orchestrator.sweep import resources as policy
    from orchestrator.train.driver import generator_input, plan_run, trained_summary
    from orchestrator.train.state import checkpoint_state

    cfg = plan.config()
    storage = Storage.from_uri(plan.storage_uri)
    keys = stage_keys(cfg)
    follow_up = plan.follow_up
    weights = storage.uri_for(Artifacts.tokenizer_weights(keys.tokenizer))

    with budget.point_ledger() as ledger:

        def stage(title: str) -> None:
            ledger.start(title)
            if rank == 0 and plan.progress:
                progress.post(plan.progress, state="running", stage=title, step=None, total=None)

        if rank == 0:
            stage("tokenizer eval")
            evaluate_tokenizer(cfg, storage, follow_up.ingested, weights, follow_up.evaluator)
            stage("latent cache")
            identity = tokenizer_identity(keys.tokenizer, weights)
            build_latent_cache(cfg, storage, follow_up.ingested, weights, identity)
        # Every rank reads the cache rank 0 wrote.
        dist.barrier()
        stage("generator")
        stream, inputs = generator_input(
            cfg, storage, storage.uri_for(Artifacts.cache(keys.cache)), follow_up.ingested
        )
        # Ray restarted the workers during the generator: its rows resume at its checkpoint.
        checkpoint = ray.train.get_checkpoint()
        state = checkpoint_state(checkpoint) if checkpoint is not None else None
        planned = plan_run(
            cfg,
            storage,
            "generator",
            stream,
            inputs=inputs,
            start_step=state.global_step if state and state.workload == "generator" else 0,
            run_ref=plan.run_ref,
            hooks=plan.hooks(),
            progress=plan.progress,
        )
        # Data too large for the workers to hold streams through Ray Datasets, which a run gets
        # when it starts: the generator then trains in its own run (the trial's next stage).
        if not planned.datasets:
            outcome = train(planned.plan)
            ledger.add(outcome["compute_s"] * policy.share(cfg).units)
            if outcome["completed"] and rank == 0:
                artifacts = Artifacts(storage)
                artifacts.mark_done(planned.plan.run_rel, trained_summary(outcome, planned.plan))
        return ledger.stop()
