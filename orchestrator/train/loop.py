"""`train_loop_per_worker(config)`: the one entry point of both workloads on every Train worker.

Per optimizer step: `gradient_accumulation_steps` micro-batches (forward, guard observation,
`engine.backward`), then the guarded `engine.step()`, then the workload's post-update work
(EMA). Every rank takes the same decisions about when to log, report and checkpoint, so
`ray.train.report` is called the same number of times everywhere. A stage ends with a
checkpoint; the next stage starts from its weights with a fresh engine and optimizer.

Resume (`ray.train.get_checkpoint()`), same world size and ZeRO stage: the engine (model and
optimizer shards), every rank's RNG streams, the data position and the EMA come back exactly,
so the losses continue bit for bit. Another layout (world size or ZeRO stage changed): the
consolidated fp32 weights, the EMA, the step, the stage and the data position (the step: its
rows do not depend on the world size, see `orchestrator/data/stream.py`) come back; the optimizer moments start fresh and the
RNG streams are reseeded from (seed, step, rank).
"""

from __future__ import annotations

import contextlib
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from orchestrator.sweep import progress
from orchestrator.sweep import resources as policy
from orchestrator.sweep.budget import ComputeClock
from orchestrator.sweep.tracking import RunLogger
from orchestrator.train.batches import optimizer_steps, rank_iterator
from orchestrator.train.engine import (
    EngineSpec,
    full_state_dict,
    initialize,
    local_weights_finite,
    resolve_precision,
    state_bytes,
)
from orchestrator.train.guard import NonFiniteGuard
from orchestrator.train.plan import TrainPlan
from orchestrator.train.state import (
    TrainState,
    consolidated_weights,
    load_engine,
    load_rng,
    read_train_state,
    resumes_from,
    seed_everything,
    write_checkpoint,
    write_export,
)
from orchestrator.train.workload import Workload


class NonFiniteWeightsError(FloatingPointError):
    """The weights became non-finite; the checkpoint that would hold them is not written."""


def make_workload(plan: TrainPlan, device: torch.device, rank: int) -> Workload:
    cfg = plan.config()
    # Frozen networks built from `random_init` (tests) must be the same on every rank and in
    # every run of the job.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if plan.workload == "tokenizer":
            from orchestrator.train.tokenizer import TokenizerWorkload

            return TokenizerWorkload(cfg, plan.stages, plan.inputs, device)
        from orchestrator.train.generator import GeneratorWorkload

        return GeneratorWorkload(cfg, plan.stages, plan.inputs, device, rank)


class Session:
    """One stage's engine and guard."""

    def __init__(
        self, plan: TrainPlan, workload: Workload, stage_index: int, weights, world_size: int
    ):
        training = plan.training()
        bundle = (
            workload.build(stage_index, weights)
            if weights is not None
            else _seeded_build(workload, stage_index, plan.config().seed)
        )
        on_gpu = next(bundle.model.parameters()).is_cuda
        self.zero_stage = training.zero_stage
        spec = EngineSpec(
            micro_batch=plan.micro_batch,
            gradient_accumulation_steps=training.gradient_accumulation_steps,
            world_size=world_size,
            zero_stage=training.zero_stage,
            precision=resolve_precision(training.precision, on_gpu),
            grad_reduce_dtype=training.grad_reduce_dtype,
            grad_clip=training.grad_clip,
            offload_optimizer=training.offload_optimizer,
            zero3_leaf=bundle.zero3_leaf,
        )
        self.engine = initialize(bundle.model, bundle.optimizer, spec, training.compile)
        self.guard = NonFiniteGuard(training.nonfinite, training.zero_stage, bundle.optimizer)

    def close(self) -> None:
        self.engine.destroy()


def _seeded_build(workload: Workload, stage_index: int, seed: int):
    # Same initial weights on every rank and in every run; fork_rng keeps the training streams
    # (already seeded or restored) untouched by the initialisation draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return workload.build(stage_index, None)


def train_loop_per_worker(config: dict) -> dict:
    """Train one workload (tokenizer or generator) on this Ray Train worker; see module doc."""
    plan = TrainPlan.from_dict(config)
    # Where Ray placed this worker, from start to end (a record only under simulated GPUs); the
    # run's directory says which run a node holds (tests kill the node of a chosen run).
    role, rank = f"{plan.workload} worker", ray.train.get_context().get_world_rank()
    point, run = policy.point_id(plan.config()), plan.run_rel
    policy.record_placement(role, point, rank=rank, run=run, phase="start")
    if plan.follow_up is None:
        outcome = _train_worker(plan)
    else:
        from orchestrator.train.point import train_point_here

        outcome = train_point_here(plan, _train_worker)
    policy.record_placement(role, point, rank=rank, run=run, phase="end")
    return outcome


def _train_worker(plan: TrainPlan) -> dict:
    cfg = plan.config()
    training = plan.training()
    hooks = plan.hooks()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    # The worker's GPU (Ray sets CUDA_VISIBLE_DEVICES), or the CPU when GPUs are simulated.
    device = torch.device("cpu") if policy.simulated() else ray.train.torch.get_device()
    workload = make_workload(plan, device, rank)
    logger = RunLogger.from_dict(plan.run_ref if rank == 0 else None, prefix=f"{plan.workload}/")
    stage_lengths = [stage.steps for stage in plan.stages]

    session: Session | None = None
    weights = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and not resumes_from(checkpoint, plan.workload):
        checkpoint = None  # the other workload's, in a point's single run
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as restored:
        if restored is None:
            state = TrainState(
                world_size=world_size, zero_stage=training.zero_stage, workload=plan.workload
            )
            seed_everything(_stream_seed(cfg.seed, 0, rank), workload.generators)
        else:
            restored = Path(restored)
            state = read_train_state(restored)
            same_layout = (state.world_size, state.zero_stage) == (world_size, training.zero_stage)
            unfinished = state.stage_step < stage_lengths[state.stage_index]
            if same_layout and unfinished:
                session = Session(plan, workload, state.stage_index, None, world_size)
                load_engine(session.engine, restored)
            else:
                weights = consolidated_weights(restored, state.zero_stage)
            if same_layout:
                load_rng(restored, rank, workload.generators)
            else:
                seed_everything(
                    _stream_seed(cfg.seed, state.global_step, rank), workload.generators
                )
            workload.load_extras(restored)
            state.world_size, state.zero_stage = world_size, training.zero_stage
            state.workload = plan.workload
    if session is not None:
        workload.start(session.engine)

    data = optimizer_steps(
        rank_iterator(rank, plan.rank_rows),
        plan.micro_batch,
        training.gradient_accumulation_steps,
        state,
    )
    reporter = Reporter(training, logger, rank, world_size, resumed_from=state.global_step)
    while True:
        if state.stage_step < stage_lengths[state.stage_index]:
            if session is None:
                session = Session(plan, workload, state.stage_index, weights, world_size)
                # The engine holds the weights now: no second copy of the model for the stage.
                weights = None
                workload.start(session.engine)
            reporter.restart_clock(state.global_step)
            stopped = _run_stage(plan, workload, session, state, data, reporter, hooks, rank)
            if stopped:
                return {
                    "completed": False,
                    "steps": state.global_step,
                    "metrics": reporter.last,
                    "compute_s": reporter.compute_total(),
                }
            last_stage = state.stage_index == len(plan.stages) - 1
            # Every rank builds the next stage's model from these weights; after the last
            # stage only rank 0 (the exporter) needs them.
            weights = full_state_dict(
                session.engine.module, session.zero_stage, keep=rank == 0 or not last_stage
            )
            session.close()
            session = None
        if state.stage_index == len(plan.stages) - 1:
            break
        state.stage_index += 1
        state.stage_step = 0

    export_uri = None
    if rank == 0:
        files, summary = workload.export(weights)
        summary.update(
            workload=plan.workload,
            steps=state.global_step,
            skipped_steps=state.skipped_steps,
            world_size=world_size,
            zero_stage=training.zero_stage,
            final_metrics=reporter.last,
            files=[f"{name}.safetensors" for name in files],
        )
        export_uri = write_export(plan.storage_uri, plan.run_rel, files, summary)
    return {
        "completed": True,
        "steps": state.global_step,
        "skipped_steps": state.skipped_steps,
        "metrics": reporter.last,
        "export_dir": export_uri,
        "compute_s": reporter.compute_total(),
    }


def _stream_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 1) % 2**63


def _run_stage(plan, workload, session, state, data, reporter, hooks, rank) -> bool:
    """Train the current stage to its end; True when a debug hook stopped the run early."""
    stage_length = plan.stages[state.stage_index].steps
    engine, guard = session.engine, session.guard
    guard.skipped_steps = state.skipped_steps
    while state.stage_step < stage_length:
        step = state.global_step + 1
        hooks.maybe_kill(step, rank)
        group = next(data)
        # Compute: the step itself (forward, backward, update, EMA), not reading its batches.
        with reporter.compute:
            guard.begin()
            term_sums: dict[str, torch.Tensor] = defaultdict(
                lambda: torch.zeros((), device=engine.device)
            )
            for batch in group:
                loss, terms = workload.loss(
                    engine, batch, state.stage_index, state.stage_step, state.global_step
                )
                loss = hooks.poison(step, rank, loss, terms)
                terms["loss"] = loss.detach()
                guard.observe(terms)
                engine.backward(loss)
                for name, value in terms.items():
                    term_sums[name] += value.detach().float()
            if guard.step(engine, step):
                workload.after_update(engine)
        state.global_step = step
        state.stage_step += 1
        state.skipped_steps = guard.skipped_steps
        stop = hooks.stops_after(step) or step == plan.stop_after_step
        stage_end = state.stage_step == stage_length
        terms = {name: total / len(group) for name, total in term_sums.items()}
        if stage_end or stop or step % reporter.training.checkpoint_every == 0:
            metrics = reporter.metrics(step, state, terms, engine)
            _checkpoint(engine, session.zero_stage, state, workload, metrics, rank)
            # Throughput measures training, not checkpoint writing.
            reporter.restart_clock(step)
        elif step % reporter.training.log_every == 0:
            # A Ray Train report waits for the controller's next health check (every 0.5 s,
            # `driver.HEALTH_CHECK_INTERVAL_S`): `log_every` should span longer than that.
            ray.train.report(reporter.metrics(step, state, terms, engine))
        if rank == 0 and step % reporter.training.log_every == 0 and plan.progress:
            progress.post(plan.progress, stage=plan.workload, step=step, total=plan.total_steps)
        if stop:
            return True
    return False


def _checkpoint(
    engine, zero_stage: int, state: TrainState, workload: Workload, metrics: dict, rank: int
) -> None:
    finite = torch.tensor(
        [float(local_weights_finite(engine.module, zero_stage))], device=engine.device
    )
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite.item()):
        raise NonFiniteWeightsError(
            f"weights are non-finite after step {state.global_step}; refusing to checkpoint them"
        )
    with tempfile.TemporaryDirectory(prefix="ckpt-") as directory:
        extras = workload.extras() if rank == 0 else {}
        write_checkpoint(Path(directory), engine, state, rank, workload.generators, extras)
        # Every rank's files are on disk before Ray starts merging them into one checkpoint.
        dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


class Reporter:
    """Per-step metrics: loss terms (mean over ranks), throughput, memory; MLflow on rank 0."""

    def __init__(self, training, logger: RunLogger, rank: int, world_size: int, resumed_from: int):
        # The step this worker group started from (0, or the restored checkpoint's step).
        self.resumed_from = resumed_from
        self.training = training
        self.logger = logger
        self.rank = rank
        self.world_size = world_size
        self.last: dict = {}
        self._since, self._since_step = time.perf_counter(), resumed_from
        # Seconds inside optimizer steps on this rank (`orchestrator/sweep/budget.py`).
        self.compute = ComputeClock()

    def compute_total(self) -> float:
        """Seconds inside steps summed over the ranks (collective: every rank calls it)."""
        total = torch.tensor([self.compute.seconds], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item())

    def restart_clock(self, step: int) -> None:
        """Throughput counts from here (engine set-up and restore are not training time)."""
        self._since, self._since_step = time.perf_counter(), step

    def metrics(self, step: int, state: TrainState, terms: dict[str, torch.Tensor], engine) -> dict:
        names = sorted(terms)
        values = torch.stack([terms[n] for n in names])
        # Collective: every rank reaches this on the same steps.
        dist.all_reduce(values)
        values = (values / self.world_size).tolist()
        now = time.perf_counter()
        steps = step - self._since_step
        elapsed = max(now - self._since, 1e-9)
        metrics = {
            "step": step,
            "stage": state.stage_index,
            "stage_step": state.stage_step,
            "epoch": state.epoch,
            "skipped_steps": state.skipped_steps,
            "resumed_from_step": self.resumed_from,
            "samples_per_s": steps * self.training.global_batch_size / elapsed,
            "lr": engine.get_lr()[0],
            **dict(zip(names, values)),
        }
        if torch.cuda.is_available():
            metrics["gpu_mem_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            # ru_maxrss is in KiB on Linux: the worker process's peak resident memory.
            metrics["rss_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        held = state_bytes(engine)
        metrics["param_mib"] = held["params"] / 2**20
        metrics["optimizer_mib"] = held["optimizer"] / 2**20
        self._since, self._since_step = now, step
        if self.rank == 0:
            self.logger.log_metrics(metrics, step=step)
        self.last = metrics
        return metrics
