"""Cluster behaviour on a simulated cluster: the resource policy (`orchestrator/sweep/resources.py`).

A local multi-node Ray cluster (`ray.cluster_utils.Cluster`, every node on 127.0.0.1) whose nodes
declare `GPU` resources; with `LDM_SIMULATE_GPUS` the code schedules exactly as on a GPU cluster
while every model computes on the CPU, and each trial, pool, Train worker and pool actor records
where Ray placed it. The sweep runs through the CLI, connected with `RAY_ADDRESS` as under
`ray job submit`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, resolve
from orchestrator.config.presets import micro
from orchestrator.sweep import resources

REPO_ROOT = Path(__file__).resolve().parents[1]


def micro_cfg(**res):
    """The micro preset with `res` resources, its evaluation and cache on pools as on a cluster
    (the preset runs them in the trial's process, which holds no GPU)."""
    base = micro()
    return resolve(
        replace(
            base,
            resources=replace(base.resources, **res),
            cache=replace(base.cache, num_actors=None),
            evaluation=replace(base.evaluation, num_workers=None),
        )
    )


# --------------------------------------------------------------------------------------------
# The policy's arithmetic
# --------------------------------------------------------------------------------------------
@pytest.fixture
def cluster_with_gpus(monkeypatch):
    """The arithmetic below asks the cluster only whether it has GPUs: say it has 4."""
    monkeypatch.setattr(resources, "cluster_gpus", lambda: 4.0)


def test_trials_at_once_follow_the_cluster_and_the_cap(cluster_with_gpus):
    cfg = micro_cfg(
        use_gpu="yes", tokenizer_workers=1, generator_workers=2, max_concurrent_trials=8
    )
    # A trial: driver (0 CPU by default) + 2 slots of (1 CPU + 1 GPU).
    assert resources.share(cfg).footprint(0.01) == {"CPU": 2.01, "GPU": 2.0}
    assert resources.concurrent_trials(cfg, True, {"CPU": 16, "GPU": 4}) == 2
    assert resources.concurrent_trials(cfg, True, {"CPU": 5, "GPU": 8}) == 2
    assert resources.concurrent_trials(cfg, False, {"CPU": 64}) == 8  # the configured cap
    with pytest.raises(ConfigError) as err:
        resources.concurrent_trials(cfg, True, {"CPU": 16, "GPU": 1})
    assert str(err.value) == (
        "resources: one trial needs 2 GPU but the Ray cluster holds 1 GPU "
        "(lower the worker counts or resources.cpus_per_worker)"
    )
    # Trial drivers run on the head node: a KubeRay head (0 CPU) holds only 0-CPU drivers.
    busy = micro_cfg(use_gpu="no", trial_cpus=0.5, max_concurrent_trials=8)
    assert resources.concurrent_trials(busy, False, {"CPU": 64}, head={"CPU": 1.0}) == 2
    with pytest.raises(
        ConfigError, match="resources.trial_cpus: a trial's driver runs on the head"
    ):
        resources.concurrent_trials(busy, False, {"CPU": 64}, head={"CPU": 0.0})


def test_pools_never_exceed_the_trials_share(cluster_with_gpus):
    cfg = micro_cfg(use_gpu="yes", tokenizer_workers=1, generator_workers=4, cpus_per_worker=2)
    assert resources.pool(cfg, "evaluation", None).size == 4  # default: the whole share
    assert resources.pool(cfg, "evaluation", 16).size == 4  # never more than the share
    assert resources.pool(cfg, "samples", None, items=2).size == 2  # nor than the work
    chosen = resources.pool(cfg, "latent cache", 1)
    assert (chosen.size, chosen.ray_args, chosen.threads) == (1, {"num_cpus": 2, "num_gpus": 1}, 2)
    cpu = resources.pool(micro_cfg(use_gpu="no"), "evaluation", None)
    assert cpu.ray_args == {"num_cpus": 1.0} and cpu.device == "cpu"


def test_use_gpu_yes_without_gpus_waits_then_fails_with_one_line(ray_local, capsys):
    import io

    said = io.StringIO()
    with pytest.raises(ConfigError) as err:
        resources.resolve_use_gpu(micro_cfg(use_gpu="yes", gpu_wait_s=0.2), say=said)
    assert "waiting up to 0.2 s for an autoscaler" in said.getvalue()
    assert str(err.value) == (
        "resources.use_gpu: `yes` but the Ray cluster has no GPU "
        "(waited 0.2 s, resources.gpu_wait_s)"
    )
    assert resources.resolve_use_gpu(micro_cfg(use_gpu="auto")) is False


# --------------------------------------------------------------------------------------------
# A simulated GPU cluster that loses a node mid-generator
# --------------------------------------------------------------------------------------------
LONG_STEPS = 12  # the point whose generator runs long enough to lose its node mid-run
CHECKPOINT_EVERY = 4  # its node is lost once it registered its first checkpoint

SIM_SPACE = {
    "name": "simcluster",
    "preset": "micro",
    "base": {
        # Every tokenizer family runs end to end in one of the cluster tests; here RAE: the
        # frozen stand-in encoder, a ViT decoder, a mean-only cache with per-position
        # statistics, the DDT head with the dimension-dependent shift. (Encoding on the fly in
        # 6 generator workers cost this test a minute: tests/test_generator_recipe.py checks
        # the workers' encoding against the tokenizer's.)
        "tokenizer": {
            "family": "rae",
            "vf": {"foundation": "standin"},
            "arch": {"embed_dim": 96},
            "decoder": {"patch_size": 2, "width": 32, "depth": 1, "heads": 2, "mlp_dim": 64},
        },
        "generator": {
            "model": {"head": {"depth": 1, "width": 32, "heads": 2}},
            # Every step logged: the history shows which steps ran twice.
            "training": {
                "time_shift": "auto",
                "checkpoint_every": CHECKPOINT_EVERY,
                "log_every": 1,
            },
        },
        "resources": {
            "use_gpu": "yes",
            "tokenizer_workers": 1,
            "generator_workers": 2,
            "cpus_per_worker": 0.5,
            # The cap is above what the cluster holds: 4 GPUs / 2 per trial = 2 at once.
            "max_concurrent_trials": 4,
            "gpu_wait_s": 0,
            # Every Train rank streams its rows through Ray Data, as on ImageNet: the pipeline
            # survives the lost node (small data is otherwise fetched in the workers).
            "in_worker_data_mb": 0,
        },
        # GPU pools (the micro preset scores and encodes in the trial's process).
        "cache": {"num_actors": None},
        "evaluation": {"num_workers": None},
    },
    # One tokenizer, latent cache and evaluation shared by four generators: two fit at once,
    # the others wait for a free pair of GPUs. The first (in grid order, so among the two that
    # start together) runs long enough to lose its node after its first checkpoint.
    "search": {"grid": {"generator.training.steps": [LONG_STEPS, 2, 3, 4]}},
}


@pytest.fixture
def sim_cluster(tmp_path, monkeypatch):
    """A head that runs no GPU work (as on KubeRay: the trials' drivers and the sweep's
    bookkeeping live there) and two nodes of 4 CPUs and 2 simulated GPUs each; Ray processes
    inherit this environment."""
    from ray.cluster_utils import Cluster

    record = tmp_path / "record"
    monkeypatch.setenv(resources.SIMULATE_ENV, str(record))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "num_gpus": 0,
            "include_dashboard": False,
            # The GCS declares a silent node dead after 3 missed 1 s health checks instead of
            # Ray's 5 x 3 s: the same failure path, 12 s less waiting for it.
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    for _ in range(2):
        cluster.add_node(num_cpus=4, num_gpus=2)
    cluster.wait_for_nodes()
    try:
        yield cluster, record
    finally:
        cluster.shutdown()


def read_record(record: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((record / "placements").glob("*.json"))]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def checkpointed_run(store: Path, step: int) -> str | None:
    """The generator run (`generators/<key>`) that registered a checkpoint at `step`, if any."""
    for snapshot in store.glob("generators/*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (json.JSONDecodeError, KeyError):  # being written this instant
            continue
        if any(r["metrics"].get("step") == step for r in results):
            return f"generators/{snapshot.parent.name}"
    return None


def lose_the_node_of(cluster, record: Path, run: str):
    """Kill (not drain) the node that holds `run`'s Train workers; a fresh one joins, as an
    autoscaler would add it. Returns the killed node's id."""
    nodes = {
        e["node"]
        for e in read_record(record)
        if e["role"] == "generator worker" and e.get("run") == run and e["phase"] == "start"
    }
    assert len(nodes) == 1, nodes  # a trial's workers are packed on one node
    (node_id,) = nodes
    (victim,) = [n for n in cluster.list_all_nodes() if n.node_id == node_id]
    cluster.remove_node(victim, allow_graceful=False)
    time.sleep(1)
    cluster.add_node(num_cpus=4, num_gpus=2)
    return node_id


# A whole sweep on a simulated cluster that loses a node: minutes on 2 cores, more on a loaded
# machine.
@pytest.mark.timeout(1800)
def test_simulated_gpu_cluster_admits_what_it_holds_and_survives_a_lost_node(tmp_path, sim_cluster):
    from mlflow import MlflowClient

    cluster, record = sim_cluster
    space = tmp_path / "simcluster.yaml"
    space.write_text(yaml.safe_dump(SIM_SPACE))
    store = tmp_path / "store"
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.frontier", "--space", str(space),
         "--storage", str(store)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # Once the long generator registered its first checkpoint, its node is lost.
        deadline = time.monotonic() + 600
        long_run = None
        while time.monotonic() < deadline and sweep.poll() is None and long_run is None:
            long_run = checkpointed_run(store, CHECKPOINT_EVERY)
            time.sleep(0.2)
        assert long_run and sweep.poll() is None, (
            "the sweep ended before the generator checkpointed"
        )
        lost = lose_the_node_of(cluster, record, long_run)
        out, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-6000:]
    assert "trials: 4 finished" in out

    entries = read_record(record)
    trials: dict[str, dict[str, float]] = {}
    for e in (e for e in entries if e["role"] == "trial"):
        trials.setdefault(e["point"], {})[e["phase"]] = e["time"]
    assert len(trials) == 4 and all(set(t) == {"start", "end"} for t in trials.values())
    # Tune ran exactly as many trials at once as 4 GPUs hold at 2 per trial.
    assert most_at_once([(t["start"], t["end"]) for t in trials.values()]) == 2
    # Every trial's driver (and so its Train controllers) ran on one node, the head.
    assert {e["node"] for e in entries if e["role"] == "trial"} == {cluster.head_node.node_id}

    pools = [e for e in entries if e["role"] == "pool"]
    assert {p["stage"] for p in pools} >= {"evaluation", "latent cache", "samples"}
    for p in pools:  # no pool larger than its trial's share (2 slots of 0.5 CPU + 1 GPU)
        assert p["size"] <= 2 and p["per_actor"] == {"num_cpus": 0.5, "num_gpus": 1}, p

    actors = [e for e in entries if e["role"] not in ("pool", "trial")]
    # The four points share one tokenizer: the stage lock let one trial train it, once.
    assert len({e["point"] for e in actors if e["role"] == "tokenizer worker"}) == 1
    roles = {e["role"] for e in actors}
    assert {"tokenizer worker", "generator worker", "cache actor", "sample actor"} <= roles
    for e in actors:  # every Train worker and pool actor holds exactly one GPU of its own
        assert len(e["gpus"]) == 1, e
    # Train workers hold their GPU bundle from their start to their end: two workers alive at
    # once (of any points) never share one, and each point's run has 2 workers on 2 bundles.
    spans: dict[tuple, dict] = {}
    for e in actors:
        if e["role"].endswith("worker"):
            span = spans.setdefault((e["role"], e["point"], e["pid"], e["rank"]), {})
            span[e["phase"]] = e
    finished = [s for s in spans.values() if set(s) == {"start", "end"}]
    generator_points = {s["start"]["point"] for s in finished if "generator" in s["start"]["role"]}
    assert len(generator_points) == 4
    for i, a in enumerate(finished):
        for b in finished[i + 1 :]:
            overlap = (
                a["start"]["time"] < b["end"]["time"] and b["start"]["time"] < a["end"]["time"]
            )
            slot_a = (a["start"]["node"], a["start"]["gpus"][0])
            slot_b = (b["start"]["node"], b["start"]["gpus"][0])
            assert not (overlap and slot_a == slot_b), (a, b)
    # The lost node's generator workers never ended; the run finished on other nodes.
    long_spans = [s for s in spans.values() if s["start"].get("run") == long_run]
    assert {s["start"]["node"] for s in long_spans if "end" not in s} == {lost}
    assert {s["end"]["node"] for s in long_spans if "end" in s} - {lost}

    # MLflow: exactly one child run per point; the long point's restarted workers began at its
    # registered checkpoint, not at step 0.
    client = MlflowClient(f"sqlite:///{store / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("simcluster").experiment_id
    children = [
        r for r in client.search_runs([experiment]) if r.data.tags.get("mlflow.parentRunId")
    ]
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    (long_child,) = [
        r for r in children if r.data.params.get("generator.training.steps") == str(LONG_STEPS)
    ]
    run_id = long_child.info.run_id
    resumed = max(m.value for m in client.get_metric_history(run_id, "generator/resumed_from_step"))
    assert resumed >= CHECKPOINT_EVERY
    counts: dict[int, int] = {}
    for metric in client.get_metric_history(run_id, "generator/step"):
        counts[metric.step] = counts.get(metric.step, 0) + 1
    assert sorted(counts) == list(range(1, LONG_STEPS + 1))
    # Nothing up to the restored checkpoint ran twice; only steps after it that were done
    # before the loss and lost with it were run (and logged) again, once.
    assert all(n == 1 for step, n in counts.items() if step <= resumed), counts
    assert all(n <= 2 for n in counts.values()), counts
