"""The main job: Ray Tune over frontier points, MLflow nesting, resume, and the frontier.

Each Tune trial is one point: it runs tokenizer training -> tokenizer evaluation -> latent cache
-> generator training -> generator evaluation (`pipeline.run_point`). Every stage output is
addressed by its config hash, so trials sharing a tokenizer share its checkpoint and cache and a
rerun skips what is finished. Train V2 runs inside a trial through its own `TorchTrainer`
(`Tuner(trainer)` is gone in Ray 2.60). Per-step metrics go from rank 0 to the point's MLflow run;
Tune gets the trial's own reports (intermediate rounds for ASHA, the final metrics).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import (
    ExperimentConfig,
    SweepConfig,
    SweepPoint,
    build_config,
    point_label,
    stage_keys,
    to_dict,
)
from orchestrator.config.loading import ConfigError, from_dict
from orchestrator.evaluation.naming import resolve_metric
from orchestrator.evaluation.report import trial_overrides, write_frontier
from orchestrator.storage.store import Storage, local_cache_root
from orchestrator.sweep import budget
from orchestrator.sweep.rerun import TUNE_DIR, check_rerun, sweep_settings
from orchestrator.sweep.tracking import (
    MLFLOW_UI,
    PARENT_TAG,
    RunRef,
    artifact_location,
    default_tracking_uri,
    run_page,
)

log = logging.getLogger("ldm_frontier")

SWEEP_TAG = "ldm.sweep"
ROLE_TAG = "ldm.role"
POINT_TAG = "ldm.point"
# Tune's retries of a failed trial: none (see make_tuner).
TRIAL_RETRIES = 0
INTERRUPTED = "interrupted: run the same command again to resume where it stopped"
# A pruned sweep's first Tune run (tokenizers and their evaluations), under the sweep's Tune dir.
TOKENIZER_PHASE = "tokenizers"


@dataclass(frozen=True)
class SweepContext:
    """Everything a trial needs, as plain data (it crosses process boundaries)."""

    sweep: dict
    cli_overrides: dict
    storage_uri: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # Resolved once per sweep on the driver (sweep/resources.py) and handed to every stage.
    use_gpu: bool
    concurrency: int

    def sweep_config(self) -> SweepConfig:
        return from_dict(SweepConfig, self.sweep)


# --------------------------------------------------------------------------------------------
# MLflow: experiment, parent run (one per sweep), child run (one per point)
# --------------------------------------------------------------------------------------------
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def ensure_experiment(client, name: str, location: str | None) -> str:
    # MlflowClient.create_experiment, not mlflow.set_experiment: the latter sets
    # MLFLOW_EXPERIMENT_ID in os.environ, which silently redirects later Ray MLflow helpers.
    found = client.get_experiment_by_name(name)
    # The experiment's kind: MLflow 3 UIs before the GenAI / machine-learning switch open the
    # experiment in the view it names (untagged, they guessed, and an experiment of nested runs
    # opened in the GenAI traces overview); 3.17's takes the view from the link we print
    # (tracking.run_page).
    if found is None:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    # One from before the tag, or that a UI guessed GenAI, holds training runs all the same.
    if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return found.experiment_id


def find_or_create_parent(
    client, experiment_id: str, sweep: SweepConfig, run_name: str, resume: bool
) -> str:
    if resume:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{SWEEP_TAG}` = '{run_name}' and tags.`{ROLE_TAG}` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={SWEEP_TAG: run_name, ROLE_TAG: "parent", "ldm.preset": sweep.preset},
    )
    return run.info.run_id


def find_or_create_child(client, ctx: SweepContext, point_key: str, label: str) -> str:
    """Idempotent per point: a restored or retried trial logs into the run it already had."""
    runs = client.search_runs(
        [ctx.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{ctx.parent_run_id}' and tags.`{POINT_TAG}` = '{point_key}'",
        max_results=1,
    )
    if runs:
        return runs[0].info.run_id
    run = client.create_run(
        ctx.experiment_id,
        run_name=label,
        tags={PARENT_TAG: ctx.parent_run_id, POINT_TAG: point_key, ROLE_TAG: "point"},
    )
    return run.info.run_id


# --------------------------------------------------------------------------------------------
# The trial
# --------------------------------------------------------------------------------------------
def run_trial(trial_config: dict) -> None:
    """One Tune trial = one frontier point."""
    import mlflow
    from mlflow import MlflowClient
    from ray import tune

    from orchestrator.sweep import pipeline, resources

    ctx = SweepContext(**trial_config["ctx"])
    tokenizer_only = trial_config.get("phase") == TOKENIZER_PHASE
    overrides = trial_overrides(trial_config)
    cfg = build_config(ctx.sweep_config(), overrides, ctx.cli_overrides)
    cfg = resources.with_resolved_gpu(cfg, ctx.use_gpu)
    keys = stage_keys(cfg)
    label = point_label(cfg)
    client = MlflowClient(ctx.tracking_uri)
    run_id = find_or_create_child(client, ctx, keys.generator_eval, label)
    ref = RunRef(ctx.tracking_uri, run_id)
    mlflow.set_tracking_uri(ctx.tracking_uri)
    system_metrics = cfg.tracking.system_metrics
    # An active fluent run in this process is what MLflow's system-metrics sampler attaches to.
    with mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics):
        metrics = pipeline.run_point(
            cfg,
            Storage.from_uri(ctx.storage_uri),
            run_ref=ref,
            overrides=overrides,
            on_intermediate=tune.report,
            tokenizer_only=tokenizer_only,
            own_tokenizer=trial_config.get("point", {}).get("own_tokenizer", False),
        )
    # In a pruned sweep's first phase, "done" means the point's tokenizer stages are.
    tune.report({**metrics, "point_done": 1})


def close_unfinished_runs(client, ctx: SweepContext, stopped: frozenset[str] = frozenset()) -> None:
    """Tune kills a trial's actor when ASHA stops it, on Ctrl+C, or when the actor dies, so the
    trial's MLflow run never leaves its `with start_run` block and would show RUNNING forever.
    Once the Tune run is over no trial is alive: mark such runs KILLED (a resumed trial's
    `start_run` sets its run RUNNING again). Runs of `stopped` points (keys of trials that an
    interrupt stopped without an error of their own) read KILLED even where the teardown left
    them FAILED."""
    running = client.search_runs(
        [ctx.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'",
    )
    torn_down = [
        run
        for run in client.search_runs(
            [ctx.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{ctx.parent_run_id}' and attributes.status = 'FAILED'",
        )
        if run.data.tags.get(POINT_TAG) in stopped
    ]
    for run in [*running, *torn_down]:
        client.set_terminated(run.info.run_id, "KILLED")


def stopped_points(grid, ctx: SweepContext) -> frozenset[str]:
    """Point keys of trials that ended neither finished, stopped early nor failed: an interrupt
    stopped them."""
    sweep = ctx.sweep_config()
    keys = set()
    for result in grid:
        if result.config is None:  # a trial Tune created but never started: it has no run
            continue
        metrics = result.metrics or {}
        if result.error is None and "point_done" not in metrics and not metrics.get("done"):
            cfg = build_config(sweep, trial_overrides(result.config), ctx.cli_overrides)
            keys.add(stage_keys(cfg).generator_eval)
    return frozenset(keys)


def trainable(cfg):
    from ray import tune

    from orchestrator.sweep.resources import trial_reservation

    return tune.with_resources(run_trial, trial_reservation(cfg))


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def install_stop_handler() -> None:
    """SIGTERM (what `ray job stop`, Kubernetes and systemd send) does what Ctrl+C does.
    Installed when the sweep starts and again after `ray.init`, which sets its own (an exit).

    The handler calls whatever handles SIGINT at that moment: Python's KeyboardInterrupt, or
    Tune's graceful stop while trials run. SIGINT itself is unblocked first: a Ray job's
    entrypoint starts with it blocked unless RAY_JOB_STOP_SIGNAL is SIGINT."""

    def forward(signum, frame) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIG_IGN / SIG_DFL: nobody set a handler; stop as Ctrl+C would
            raise KeyboardInterrupt

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, forward)


def closed_port() -> int:
    """A loopback port that nothing listens on (the OS's pick for a socket closed at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_ray(cfg_cpus_hint: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        install_stop_handler()
        return
    # Alone on a laptop: start a private local instance (never attach to someone else's).
    # Logical CPUs are doubled because a nested Tune -> Train -> Ray Data stack deadlocks when
    # Train workers hold every CPU the Data read tasks need (environment notes, section 3).
    cores = os.cpu_count() or 2
    # Nothing drains or preempts the nodes of a private local instance: no watcher actor (a
    # process polling every 5 s) beside every Train run.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray's state API (Train's placement-group cleaner asks it every second whether the
    # controller lives) finds "its" cluster through /tmp/ray/ray_current_cluster, which names the
    # last `ray start` head on this machine, not this instance: a stale one costs a 40 s GCS
    # timeout per query and 12 s at the end of every Train run, a live one answers for another
    # cluster (our controller "dead", its placement group removed). This instance's own API
    # server (dashboard.py without the UI modules) gets its port only inside `ray.init`: point
    # the state API at a closed loopback port, so every query fails at once (the cleaner then
    # keeps watching; a private instance ends with this process anyway).
    # Only the instance's processes (spawned now, with this environment) keep the setting: in
    # this process it would also override the address a job client is given.
    saved = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{closed_port()}"
    try:
        ray.init(
            address="local",
            # With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (frontier.loopback_only) nothing listens
            # beyond loopback; the node IP is what Train hands its workers as MASTER_ADDR.
            _node_ip_address="127.0.0.1",
            num_cpus=max(4, 2 * cores) if cfg_cpus_hint is None else cfg_cpus_hint,
            include_dashboard=False,
            log_to_driver=False,
        )
    finally:
        if saved is None:
            del os.environ["RAY_API_SERVER_ADDRESS"]
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = saved
    install_stop_handler()


@contextlib.contextmanager
def console_to(log_file: Path):
    """Send the process's stdout and stderr (fds 1 and 2: raylet warnings, Ray Data and Tune
    chatter, worker tracebacks) to the log file while the sweep runs; yields a stream to the
    real terminal for the live view."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(log_file, "ab") as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()


def configure_logging(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Ray's and MLflow's own chatter goes to the file, not the terminal.
    for name in ("ray", "mlflow", "alembic", "urllib3", "deepspeed"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


def run_sweep(
    sweep: SweepConfig, points: list[SweepPoint], cli_overrides: dict, *, resume: bool = True
) -> int:
    """Run every point of `sweep` (resuming a previous run of the same name), then chart the
    frontier; returns the process exit status (1 when a trial failed).

    Raises `ConfigError` (exit 2) before anything is written when the cluster cannot run the
    sweep: `use_gpu: yes` without GPUs, or one trial larger than the whole cluster."""
    import ray
    from mlflow import MlflowClient

    install_stop_handler()
    from orchestrator.sweep import resources

    base = build_config(sweep, {}, cli_overrides)
    init_ray()
    use_gpu = resources.resolve_use_gpu(base, say=sys.stdout)
    cluster = ray.cluster_resources()
    # Every point's trial must fit; the largest sets how many run at once.
    concurrency = min(
        resources.concurrent_trials(p.config, use_gpu, cluster, resources.head_resources())
        for p in points or [base]
    )
    storage = Storage.from_uri(base.storage)
    run_name = sweep.name if resume else f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_rerun(storage, run_name, sweep_settings(sweep, cli_overrides))
    except ConfigError as err:
        print(f"error: {sweep.name}: {err}", file=sys.stderr)
        return 2  # frontier.EXIT_USER_ERROR, before anything started
    log_file = log_file_of(storage, run_name)
    configure_logging(log_file)
    started = time.time()
    print(f"logs: {log_file} (Ray worker logs: /tmp/ray/session_latest/logs)", flush=True)

    local_root = storage.local_path() if storage.is_local else None
    tracking_uri = default_tracking_uri(base.tracking.tracking_uri, local_root)
    client = MlflowClient(tracking_uri)
    experiment = base.tracking.experiment_name or sweep.name
    experiment_id = ensure_experiment(
        client, experiment, artifact_location(tracking_uri, local_root, storage.uri)
    )
    parent_id = find_or_create_parent(client, experiment_id, sweep, run_name, resume)
    ctx = SweepContext(
        to_dict(sweep),
        cli_overrides,
        storage.uri,
        tracking_uri,
        experiment_id,
        parent_id,
        use_gpu,
        concurrency,
    )
    log.info(
        "resources: use_gpu resolved to %s; %d trial(s) at once on %s",
        use_gpu,
        concurrency,
        {k: v for k, v in cluster.items() if k in ("CPU", "GPU")},
    )
    try:
        return finish_sweep(sweep, points, ctx, base, storage, run_name, resume, client, started)
    except KeyboardInterrupt:  # a stop while the frontier is written: the sweep is not done
        close_unfinished_runs(client, ctx)
        client.set_terminated(parent_id, "KILLED")
        print(INTERRUPTED, flush=True)
        return 130
    except Exception as err:  # noqa: BLE001 - the driver's own failure: one line, run FAILED
        log.exception("the sweep driver failed")
        close_unfinished_runs(client, ctx)
        client.set_terminated(parent_id, "FAILED")
        message = " ".join(str(err).split())[:300]
        print(f"error: {type(err).__name__}: {message} (traceback in {log_file})", flush=True)
        return 1


def finish_sweep(sweep, points, ctx, base, storage, run_name, resume, client, started) -> int:
    """The Tune run, then the frontier, the parent run's state and the summary lines."""
    parent_id = ctx.parent_run_id
    with console_to(log_file_of(storage, run_name)) as terminal:
        try:
            grid, pruning, shared_compute = run_trials(
                sweep, points, ctx, base, storage, run_name, resume, terminal
            )
        except KeyboardInterrupt:  # before Tune took over Ctrl+C: preparing the shared inputs
            grid, pruning = None, None
    planned = planned_trials(sweep, points)
    if pruning is not None and pruning.decision is not None:
        planned = len(pruning.decision.kept)
    outcome = None if grid is None else trial_outcomes(grid, planned)
    # A trial that Tune stopped on an interrupt may have left its run FAILED (its Train run was
    # torn down under it): that point was stopped, not broken, so it reads KILLED like the rest.
    stopped = (
        frozenset() if grid is None or outcome["unfinished"] == 0 else stopped_points(grid, ctx)
    )
    close_unfinished_runs(client, ctx, stopped)
    if grid is None:
        client.set_terminated(parent_id, "KILLED")
        print(INTERRUPTED, flush=True)
        return 130
    if pruning is not None and pruning.decision is not None:
        for line in log_pruning(pruning, ctx, client):
            print(line, flush=True)
    if outcome["finished"]:
        summary = write_frontier(sweep, ctx, storage, run_name, grid, client, pruning)
        print(summary.table, flush=True)
        print(f"\nfrontier chart: {summary.chart}\nfrontier table: {summary.csv}", flush=True)
    else:  # an empty chart would only look like a result
        print("no point finished: no frontier chart yet", flush=True)
    # The parent reads like its sweep: KILLED until a resume finishes it, FAILED if a trial did.
    status = "KILLED" if outcome["unfinished"] else "FAILED" if outcome["failed"] else "FINISHED"
    client.set_terminated(parent_id, status)
    for result in grid:
        if result.error is not None:
            print(f"failed trial: {result.path} ({type(result.error).__name__})", flush=True)
    wall = time.time() - started
    counts = ", ".join(f"{n} {state}" for state, n in outcome.items() if n)
    print(f"wall time: {wall / 60:.1f} min; trials: {counts}", flush=True)
    # A pruned sweep computed in two Tune runs: its tokenizer phase and its generator phase.
    earlier = list(pruning.first) if pruning is not None and pruning.first is not grid else []
    print(compute_line([*earlier, *grid], shared_compute, started, client, parent_id), flush=True)
    experiment = client.get_experiment(ctx.experiment_id).name
    # The parent run's page, on the chart once there is one (its grids are beside it, points/).
    chart = "frontier.png" if outcome["finished"] else None
    if ctx.tracking_uri.startswith("http"):
        page = run_page(ctx.tracking_uri, ctx.experiment_id, parent_id, chart)
        print(f"MLflow (experiment `{experiment}`): {page}", flush=True)
    else:
        page = run_page(MLFLOW_UI, ctx.experiment_id, parent_id, chart)
        print(
            f"MLflow (experiment `{experiment}`): mlflow ui --backend-store-uri "
            f"{ctx.tracking_uri}, then open {page}",
            flush=True,
        )
    if outcome["unfinished"]:
        print(INTERRUPTED, flush=True)
        return 130
    return 1 if outcome["failed"] else 0


def compute_line(results, shared_compute: float, started: float, client, parent_id: str) -> str:
    """The share of the cluster's unit-seconds spent computing in this run (`sweep/budget.py`),
    logged onto the parent run too."""
    import ray

    from orchestrator.sweep import resources

    wall = time.time() - started
    # Only trials that reported in this run: a resumed sweep's finished trials computed before.
    trials = sum(
        budget.total_compute(r.metrics)
        for r in results
        if r.metrics and r.metrics.get("timestamp", 0) >= started
    )
    computed = shared_compute + trials
    if resources.cluster_gpus():
        units = ray.cluster_resources()["GPU"]
    elif os.environ.get("RAY_ADDRESS"):
        units = ray.cluster_resources()["CPU"]
    else:  # the private instance declares twice the cores (`init_ray`): the machine has these
        units = float(os.cpu_count() or 1)
    share = budget.compute_share(computed, wall, units)
    client.log_metric(parent_id, "compute_share", share)
    client.log_metric(parent_id, "compute_unit_s", computed)
    kind = "GPU" if resources.cluster_gpus() else "core"
    return (
        f"compute: {share:.0%} of {units:g} {kind}s x {wall:.0f} s went into steps and "
        f"evaluation batches ({computed:.0f} {kind}-s; the rest: start-up, scheduling, I/O, waits)"
    )


def log_file_of(storage: Storage, run_name: str) -> Path:
    # On object storage the driver log stays in the local cache (a file appended line by line).
    sweep_dir = (
        storage.local_path("sweeps", run_name)
        if storage.is_local
        else local_cache_root() / "logs" / run_name
    )
    return sweep_dir / "driver.log"


def planned_trials(sweep, points) -> int:
    """A grid runs one trial per point; an Optuna search runs `num_samples`."""
    return len(points) or sweep.search.optuna.num_samples


def trial_outcomes(grid, planned: int) -> dict[str, int]:
    """finished / stopped early (ASHA) / failed / unfinished (the sweep was interrupted)."""
    # Tune creates trials lazily (max_concurrent_trials at a time), so a Ctrl+C between two
    # trials leaves the later ones out of the grid altogether: they count as unfinished too.
    outcome = {
        "finished": 0,
        "stopped early": 0,
        "failed": 0,
        "unfinished": max(0, planned - len(grid)),
    }
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None:
            outcome["failed"] += 1
        elif "point_done" in metrics:
            outcome["finished"] += 1
        elif metrics.get("done"):  # a scheduler's STOP marks the last result done
            outcome["stopped early"] += 1
        else:
            outcome["unfinished"] += 1
    return outcome


def run_trials(sweep, points, ctx, base, storage, run_name, resume, terminal):
    """Shared inputs first (built once, before trials race for them), then the Tune run."""
    from orchestrator.sweep import pipeline
    from orchestrator.sweep.locks import create_lock_table
    from orchestrator.sweep.progress import LiveView, create_board

    # Tune's new console output prints banners even at verbose=0; the legacy one is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A trial reports three kinds of results: Train's per-checkpoint metrics, `fd_intermediate`
    # rounds and the final metrics. Only the last carries the searcher's metrics, which Tune's
    # strict check would demand of every result.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Held for the whole run: an actor no handle refers to is destroyed, named or not, and
    # stage locks would then silently lock nothing.
    locks = create_lock_table()
    board = create_board(planned_trials(sweep, points))
    print("preparing the shared inputs: ingest, stand-in ViT, evaluator", file=terminal)
    with LiveView(board, stream=terminal):
        with budget.point_ledger() as shared:
            shared.start("shared inputs")
            for cfg in {p.keys.dataset: p.config for p in points}.values() or [base]:
                pipeline.prepare_shared(cfg, storage)
        log.info("shared inputs: (wall, compute) %s", shared.stop())
        shared_compute = budget.total_compute(shared.stop())
        pruning = None
        if sweep.search.prune.enabled:
            # Phase 1: every tokenizer and its evaluation; then generators for the kept points.
            first = make_tuner(
                sweep, points, ctx, base, storage, run_name, resume, phase=TOKENIZER_PHASE
            ).fit()
            pruning = decide_pruning(sweep, points, base, ctx, first)
            if pruning.decision is None:  # a tokenizer failed or the sweep was interrupted
                del locks
                return first, pruning, shared_compute
            points = [p for p in points if p.index in pruning.decision.kept]
        grid = make_tuner(sweep, points, ctx, base, storage, run_name, resume).fit()
    del locks
    return grid, pruning, shared_compute


def decide_pruning(sweep, points, base, ctx: SweepContext, first):
    """Which points' generators train, from the first phase's tokenizer metrics."""
    from orchestrator.evaluation.naming import resolve_proxy
    from orchestrator.evaluation.pareto import frontier_axes
    from orchestrator.evaluation.report import phase_one_rows
    from orchestrator.sweep.cost import sweep_cost
    from orchestrator.sweep.prune import Pruning, select_points

    outcome = trial_outcomes(first, len(points))
    if outcome["failed"] or outcome["unfinished"] or outcome["stopped early"]:
        return Pruning(None, {}, first, 0.0)
    rows = phase_one_rows(sweep, ctx.cli_overrides, first)
    recon, _ = frontier_axes(list(rows.values()), sweep.frontier.x, "auto")
    proxy = resolve_proxy(sweep.search.prune.proxy, base)
    values = {
        i: (row.metrics.get(recon, float("nan")), row.metrics.get(proxy, float("nan")))
        for i, row in rows.items()
    }
    prune = sweep.search.prune
    decision = select_points(
        values,
        prune.kept(len(points)),
        reconstruction=recon,
        proxy=proxy,
        keep_pareto=prune.keep_pareto,
    )
    cost = sweep_cost(points)
    saved = cost.hours(cost.total_flops - cost.kept_flops(set(decision.kept)))
    return Pruning(decision, rows, first, saved)


def log_pruning(pruning, ctx: SweepContext, client) -> list[str]:
    """Tag every point's run trained or pruned, log the saving on the parent; summary lines."""
    from orchestrator.sweep.prune import PRUNED, STATUS_TAG

    decision = pruning.decision
    sweep = ctx.sweep_config()
    for result in pruning.first:
        cfg = build_config(sweep, trial_overrides(result.config), ctx.cli_overrides)
        run_id = find_or_create_child(client, ctx, stage_keys(cfg).generator_eval, point_label(cfg))
        index = result.config["point"]["index"]
        client.set_tag(run_id, STATUS_TAG, PRUNED if index in decision.pruned else "trained")
    client.log_metric(ctx.parent_run_id, "pruned_points", float(len(decision.pruned)))
    client.log_metric(ctx.parent_run_id, "gpu_hours_saved_by_pruning", pruning.saved_gpu_hours)
    client.set_tag(ctx.parent_run_id, "ldm.prune.proxy", decision.proxy)
    return [
        f"pruning by {decision.proxy}: generators trained for points "
        f"{', '.join(map(str, decision.kept))}; pruned {', '.join(map(str, decision.pruned)) or 'none'}"
        f" (planned saving {pruning.saved_gpu_hours:.3g} GPU-hours at resources.tflops_per_gpu)"
    ]


def make_tuner(sweep, points, ctx, base, storage, run_name, resume, phase: str | None = None):
    from ray import tune

    fn = trainable(base)
    # A pruned sweep's first phase is its own Tune experiment inside the sweep's Tune dir.
    parts = ("sweeps", run_name, TUNE_DIR, *([phase] if phase else []))
    path = storage.uri_for(*parts)
    # A full URI (the filesystem comes from it, object-store endpoint included).
    if resume and tune.Tuner.can_restore(path):
        log.info("restoring the Tune experiment at %s", path)
        return tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True)
    param_space: dict = {"ctx": ctx.__dict__, "phase": phase}
    search_alg = scheduler = None
    if sweep.search.algorithm == "grid":
        # A tokenizer no other point shares may train in one Train run with its point's later
        # stages (`train/point.py`); an Optuna search cannot know, so its points never do.
        uses = Counter(p.keys.tokenizer for p in points)
        param_space["point"] = tune.grid_search(
            [
                {
                    "index": p.index,
                    "overrides": p.overrides,
                    "own_tokenizer": uses[p.keys.tokenizer] == 1,
                }
                for p in points
            ]
        )
        num_samples = 1
    else:
        search_alg, space = optuna_search(sweep, base, ctx.concurrency)
        param_space["overrides"] = space
        num_samples = sweep.search.optuna.num_samples
    if sweep.search.scheduler.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        sch = sweep.search.scheduler
        every = base.evaluation.intermediate_every
        # Time is the generator step of an intermediate round, so rungs fall on rounds; results
        # without `fd_intermediate` (Train's own reports, the final one) leave ASHA untouched.
        scheduler = ASHAScheduler(
            time_attr="generator_step",
            metric=sch.metric,
            mode="min",
            max_t=base.generator.training.steps,
            grace_period=sch.grace_period * every,
            reduction_factor=sch.reduction_factor,
        )
    return tune.Tuner(
        fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples,
            max_concurrent_trials=ctx.concurrency,
            # A finished trial's process runs the next point (same reservation): its torch,
            # MLflow and Ray Train imports (~4 core-s) and cached dataset indexes are not paid again.
            # Not under ASHA: a stopped trial's thread unwinds (stage lock, MLflow run) only when
            # the next trial resets the process, and Tune fails that trial if it takes over 2 s.
            reuse_actors=scheduler is None,
            search_alg=search_alg,
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            name=parts[-1],
            storage_path=storage.uri_for(*parts[:-1]),
            # One layer of retries: a training stage restarts from its last checkpoint inside
            # the trial (Train's FailureConfig, `resources.max_failures`); Tune does not run a
            # failed trial again (that would repeat those retries and every stage before).
            # Rerunning the sweep retries errored trials, skipping every stage already done.
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            verbose=0,
        ),
    )


def optuna_search(sweep: SweepConfig, base: ExperimentConfig, concurrency: int):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    opt = sweep.search.optuna
    makers = {
        "choice": lambda s: tune.choice(list(s["values"])),
        "uniform": lambda s: tune.uniform(s["low"], s["high"]),
        "loguniform": lambda s: tune.loguniform(s["low"], s["high"]),
        "randint": lambda s: tune.randint(s["low"], s["high"]),
    }
    space = {key: makers[spec["type"]](spec) for key, spec in opt.space.items()}
    # Always lists, even for one metric: OptunaSearch then takes only the final result (a
    # single metric would make it read that metric from every intermediate result too).
    # `fid` -> `fid_10k`: objectives may name a metric without its count (see `resolve_metric`).
    metrics = [resolve_metric(name, base) for name in opt.metrics]
    searcher = OptunaSearch(metric=metrics, mode=list(opt.modes), seed=opt.seed)
    # As many open suggestions as trials run at once: Optuna learns from finished trials only.
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency), space
