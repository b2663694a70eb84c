"""The one resource policy: what a trial may hold, how many trials run at once, which device.

Rules, each decided here and nowhere else:

- **Devices.** `resources.use_gpu` (`auto` / `yes` / `no`) is resolved once per sweep, on the
  driver, from the cluster (`resolve_use_gpu`), and every trial gets the config with `yes` or
  `no` in it (`with_resolved_gpu`); stages read `uses_gpu(cfg)`. `yes` on a cluster without GPUs
  waits up to `resources.gpu_wait_s` for an autoscaler to add GPU nodes, saying so, and then
  fails with one line instead of letting Ray wait forever for a GPU slot.
- **A trial's share.** A trial holds at most `share` workers of `resources.cpus_per_worker`
  CPUs (+ 1 GPU each on GPU clusters), `share` = the larger Train worker count. Its stages run
  one after another, so the Train run of a stage and every actor pool (evaluation, latent
  cache, sample generation) each fit in that share: pools are sized by `pool()`, never from the
  cluster's total.
- **Trial drivers on the head node.** Train V2 attaches a run's controller to the node of the
  process that starts it, the trial. Trials (and the sweep's bookkeeping actors) therefore run
  on the head node, which lives as long as the sweep: a lost worker node then takes only Train
  workers and pool actors, and the surviving controller restarts its workers from the run's
  latest checkpoint (`resources.max_failures`), instead of a whole trial dying with its
  controller and its placement group left behind.
- **Admission.** Train V2 creates the placement group of its workers itself, from inside the
  trial; Ray has no nested placement groups, so a Tune `PlacementGroupFactory` that also held
  the workers would reserve them twice (idle bundles next to Train's own) and deadlock a full
  cluster. A trial therefore asks Tune only for its driver (`resources.trial_cpus`), and the
  sweep admits `concurrent_trials()` trials at once: the configured cap, lowered to what the
  cluster holds (cluster total // trial footprint, per resource). A trial bigger than the
  whole cluster is a config error (exit 2) naming the resource and both numbers.

Simulated GPUs (tests only): with `LDM_SIMULATE_GPUS=<dir>` in the environment of the driver
and the Ray nodes, nodes that declare `GPU` resources are scheduled exactly as a GPU cluster
(Train asks 1 GPU per worker, pools 1 GPU per actor) while every model computes on the CPU
(`device()`), collectives use gloo, and every Train worker and pool actor appends where Ray
placed it under `<dir>/placements/` (`record_placement`).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from orchestrator.config import ConfigError, ExperimentConfig

if TYPE_CHECKING:
    import numpy as np

SIMULATE_ENV = "LDM_SIMULATE_GPUS"


def simulated() -> bool:
    return bool(os.environ.get(SIMULATE_ENV))


# --------------------------------------------------------------------------------------------
# use_gpu, once per sweep
# --------------------------------------------------------------------------------------------
def cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0.0)


def resolve_use_gpu(cfg: ExperimentConfig, say: TextIO | None = None) -> bool:
    """`auto`: GPUs when the cluster has them now. `yes`: GPUs; when the cluster has none, ask
    the autoscaler for one and wait up to `resources.gpu_wait_s` for it (an autoscaling cluster
    starts with none, or removed idle ones), then refuse with one line."""
    setting = cfg.resources.use_gpu
    if setting == "no":
        return False
    if setting == "auto" or cluster_gpus() > 0:
        return cluster_gpus() > 0
    wait = cfg.resources.gpu_wait_s
    if say is not None and wait > 0:
        print(
            f"resources.use_gpu is `yes` and the cluster has no GPU yet: waiting up to "
            f"{wait:g} s for an autoscaler to add GPU nodes",
            file=say,
            flush=True,
        )
    if wait > 0:
        from ray.autoscaler.sdk import request_resources

        # Demand an autoscaler sees (nothing else asks for a GPU while we wait).
        request_resources(bundles=[{"GPU": 1}])
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            if cluster_gpus() > 0:
                return True
    finally:
        if wait > 0:
            request_resources(bundles=[])
    raise ConfigError(
        "resources.use_gpu",
        f"`yes` but the Ray cluster has no GPU (waited {wait:g} s, resources.gpu_wait_s)",
    )


def with_resolved_gpu(cfg: ExperimentConfig, gpu: bool) -> ExperimentConfig:
    """The config with `use_gpu` fixed to what the sweep resolved (`yes` / `no`)."""
    return replace(cfg, resources=replace(cfg.resources, use_gpu="yes" if gpu else "no"))


def uses_gpu(cfg: ExperimentConfig) -> bool:
    """Whether a stage asks Ray for GPUs: by the same rule, on the sweep's resolved `yes`/`no`
    (`yes` returns at once while the cluster has GPUs) or, for a stage run on its own, on the
    config as written. Never a GPU request the cluster cannot meet: Ray would wait forever."""
    return resolve_use_gpu(cfg)


def device(gpu: bool) -> str:
    """Where a worker or actor computes: its GPU, or the CPU when GPUs are only simulated."""
    return "cuda" if gpu and not simulated() else "cpu"


def head_resources() -> dict[str, float]:
    import ray

    for node in ray.nodes():
        if node.get("Alive") and HEAD_NODE in node.get("Resources", {}):
            return node["Resources"]
    return {}


# --------------------------------------------------------------------------------------------
# A trial's share, its pools, and how many trials fit
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Share:
    """What one trial may hold at once: `slots` workers of `cpus` CPUs (+ 1 GPU each)."""

    slots: int
    cpus: float
    gpu: bool

    def per_slot(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": 1.0} if self.gpu else {})}

    @property
    def units(self) -> float:
        """Compute units of one slot (`sweep/budget.py`): its GPU, else its CPUs."""
        return 1.0 if self.gpu else self.cpus

    def footprint(self, driver_cpus: float) -> dict[str, float]:
        """The most a trial holds at any moment: its driver plus its full share."""
        return {
            "CPU": driver_cpus + self.slots * self.cpus,
            **({"GPU": float(self.slots)} if self.gpu else {}),
        }


def share(cfg: ExperimentConfig, gpu: bool | None = None) -> Share:
    r = cfg.resources
    gpu = uses_gpu(cfg) if gpu is None else gpu
    return Share(max(r.tokenizer_workers, r.generator_workers), r.cpus_per_worker, gpu)


@dataclass(frozen=True)
class Pool:
    """An actor pool of one stage: `size` actors, each with `ray_args` and `threads`; size 0
    is the trial's own process (`map`)."""

    size: int
    ray_args: dict
    device: str
    threads: int
    # Compute units of one actor (`sweep/budget.py`): its GPU, else its CPUs.
    units: float

    def map(
        self,
        source: PoolInput,
        worker: type,
        kwargs: dict,
        *,
        batch_size: int,
        batch_format: str,
        **strategy,
    ) -> Iterator[dict[str, np.ndarray]]:
        """`worker(**kwargs)(batch)` over the batches of `source`, as numpy columns.

        On `size` Ray Data actors over the source's Ray Dataset (`strategy`: more
        `ActorPoolStrategy` options), or, for a pool of size 0, on one instance in this process
        over the source's own batches: the same class and the same batches, without an actor to
        start or a Ray Data pipeline to run. On a small run each stage's pool was a process
        importing torch and loading its networks, and each input pipeline seconds of scheduling,
        for about a second of work (issue 16)."""
        if self.size == 0:
            import pyarrow as pa

            instance = worker(**kwargs)
            for batch in source.batches(batch_size, batch_format):
                out = instance(batch)
                if isinstance(out, pa.Table):
                    out = {name: out.column(name).to_numpy() for name in out.column_names}
                yield out
            return
        import ray

        mapped = source.dataset().map_batches(
            worker,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            batch_format=batch_format,
            compute=ray.data.ActorPoolStrategy(size=self.size, **strategy),
            **self.ray_args,
        )
        yield from mapped.iter_batches(batch_size=None, batch_format="numpy")


class PoolInput(Protocol):
    """What a pool maps over: a Ray Dataset for actors, or the same batches made here."""

    def dataset(self): ...

    def batches(self, batch_size: int, batch_format: str) -> Iterator: ...


@dataclass(frozen=True)
class Items:
    """Work items of a pool (chunks, shards): rows of scalar or list columns."""

    rows: list[dict]

    def dataset(self):
        import ray

        # One block per item: every item is a unit of work, spread over the actors.
        return ray.data.from_items(self.rows, override_num_blocks=len(self.rows))

    def batches(self, batch_size: int, batch_format: str) -> Iterator:
        import numpy as np
        import pyarrow as pa

        for start in range(0, len(self.rows), batch_size):
            part = self.rows[start : start + batch_size]
            if batch_format == "pyarrow":
                yield pa.Table.from_pylist(part)
            else:
                yield {name: np.asarray([row[name] for row in part]) for name in part[0]}


def pool(
    cfg: ExperimentConfig, stage: str, requested: int | None, items: int | None = None
) -> Pool:
    """`stage`'s actor pool: `requested` actors (config; default the whole share), never more
    than the trial's share nor than the work items; `requested` 0 is the trial's own process
    (CPU only, `config/validation.py`: a trial's driver holds no GPU)."""
    s = share(cfg)
    if requested == 0:
        record_placement("pool", point_id(cfg), stage=stage, size=0, per_actor={})
        return Pool(0, {}, device(False), max(1, int(s.cpus)), s.units)
    size = max(1, min(requested or s.slots, s.slots, items or s.slots))
    ray_args = {"num_cpus": s.cpus, **({"num_gpus": 1} if s.gpu else {})}
    record_placement("pool", point_id(cfg), stage=stage, size=size, per_actor=ray_args)
    return Pool(size, ray_args, device(s.gpu), max(1, int(s.cpus)), s.units)


def concurrent_trials(
    cfg: ExperimentConfig,
    gpu: bool,
    cluster: dict[str, float],
    head: dict[str, float] | None = None,
) -> int:
    """Trials the cluster can hold at once, at most `resources.max_concurrent_trials`; a trial
    larger than the whole cluster is refused (exit 2) naming the resource and both numbers."""
    need = share(cfg, gpu).footprint(cfg.resources.trial_cpus)
    fits = cfg.resources.max_concurrent_trials
    if head is not None and cfg.resources.trial_cpus > 0:
        if cfg.resources.trial_cpus > head.get("CPU", 0.0) + 1e-9:
            raise ConfigError(
                "resources.trial_cpus",
                f"a trial's driver runs on the head node, which holds {head.get('CPU', 0.0):g} "
                f"CPU; {cfg.resources.trial_cpus:g} needed (set it to 0)",
            )
        fits = min(fits, math.floor(head["CPU"] / cfg.resources.trial_cpus + 1e-9))
    for resource, amount in need.items():
        held = cluster.get(resource, 0.0)
        if amount > held + 1e-9:
            raise ConfigError(
                "resources",
                f"one trial needs {amount:g} {resource} but the Ray cluster holds {held:g} "
                f"{resource} (lower the worker counts or resources.cpus_per_worker)",
            )
        fits = min(fits, math.floor(held / amount + 1e-9))
    return fits


HEAD_NODE = "node:__internal_head__"  # a resource only the head node has (1.0 of it)


def trial_reservation(cfg: ExperimentConfig) -> dict[str, float]:
    """What Tune reserves for a trial's driver: its CPUs, on the head node."""
    return {"CPU": cfg.resources.trial_cpus, HEAD_NODE: 0.001}


def describe(cfg: ExperimentConfig) -> str:
    """What Tune reserves for one trial of `cfg`, for `--dry-run` and the driver log."""
    r = cfg.resources
    gpu_note = {"auto": "GPU if the cluster has one", "yes": "GPU", "no": "no GPU"}[r.use_gpu]
    s = share(cfg, gpu=r.use_gpu != "no")
    per = " + ".join(f"{v:g} {k}" for k, v in s.per_slot().items())
    total = ", ".join(f"{v:g} {k}" for k, v in s.footprint(r.trial_cpus).items())
    return (
        f"driver {r.trial_cpus:g} CPU + {s.slots} x ({per}) [{gpu_note}] = {total} per trial; "
        f"up to {r.max_concurrent_trials} at once"
    )


def on_driver_node():
    """Where the sweep's bookkeeping actors (stage locks, live view) live: the driver's node,
    which lasts as long as the sweep; a worker node may be lost, and with it any actor on it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


# --------------------------------------------------------------------------------------------
# Placement record (simulated clusters)
# --------------------------------------------------------------------------------------------
def point_id(cfg: ExperimentConfig) -> str:
    """A point's name in the placement record: its generator evaluation's stage key."""
    from orchestrator.config import stage_keys

    return stage_keys(cfg).generator_eval[:12]


def record_placement(role: str, point: str | None, **extra) -> None:
    """Under simulation, append where Ray placed this process: node, GPU ids, role, point."""
    root = os.environ.get(SIMULATE_ENV)
    if not root:
        return
    import ray

    context = ray.get_runtime_context()
    entry = {
        "role": role,
        "point": point,
        "node": context.get_node_id(),
        "gpus": [str(g) for g in context.get_accelerator_ids().get("GPU", [])],
        "pid": os.getpid(),
        "time": time.time(),
        **extra,
    }
    folder = Path(root) / "placements"
    folder.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: a reader polling mid-run never sees half an entry.
    name = uuid.uuid4().hex
    (folder / f"{name}.tmp").write_text(json.dumps(entry))
    os.replace(folder / f"{name}.tmp", folder / f"{name}.json")
