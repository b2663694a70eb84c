"""A laptop run's private Ray listens on loopback only: the CLI's `init_ray` after
`loopback_only` (what `python -m orchestrator.frontier` does without RAY_ADDRESS), a task, an
actor and a two-worker Train run (gloo, the project's `LoopbackTorchConfig`) in flight, then
every listening socket of the process tree is listed, from inside the Train run's rank 0 while
its process group is up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, os, sys
from orchestrator.frontier import loopback_only
if sys.argv[1] == "cli":
    loopback_only()
import psutil, ray
from orchestrator.sweep.tune import init_ray
init_ray()

@ray.remote
class Echo:
    def ping(self):
        return os.getpid()

@ray.remote
def task():
    return os.getpid()

def listeners(root_pid):
    root = psutil.Process(root_pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append([proc.name(), conn.laddr.ip, conn.laddr.port])
        except psutil.Error:
            pass
    return found

def train_fn(config):
    import torch, torch.distributed as dist
    dist.all_reduce(torch.ones(1))  # the process group (and its store) is up
    seen = listeners(config["driver"]) if ray.train.get_context().get_world_rank() == 0 else None
    dist.barrier()
    return seen

import ray.train
from ray.train import ScalingConfig, RunConfig
from ray.train.torch import TorchTrainer
from orchestrator.train.rendezvous import LoopbackTorchConfig

actor = Echo.remote()
ray.get([actor.ping.remote(), task.remote()])
result = TorchTrainer(
    train_fn,
    train_loop_config={"driver": os.getpid()},
    torch_config=LoopbackTorchConfig(),
    scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
    run_config=RunConfig(storage_path=sys.argv[2], name="loopback"),
).fit()
print("LISTENERS " + json.dumps(result.return_value))
ray.shutdown()
"""

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listeners(mode: str, tmp_path) -> list[list]:
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("LISTENERS ")), None)
    assert line, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(line.removeprefix("LISTENERS "))


def test_the_private_ray_of_a_laptop_run_listens_on_loopback_only(tmp_path):
    found = listeners("cli", tmp_path)
    names = {name for name, _, _ in found}
    # The check saw Ray's own processes and both Train workers (gloo pairs, rank 0's store).
    assert {"gcs_server", "raylet"} <= names, found
    assert sum(name.startswith("ray::RayTrainWorker") for name in names) >= 1, found
    assert [x for x in found if x[1] not in LOOPBACK] == []


def test_the_cli_module_imports_no_ray():
    """`loopback_only` works only if it runs before Ray's first import (Ray reads the switch at
    import): the CLI module and what it imports at the top must not import Ray."""
    probe = "import sys, orchestrator.frontier; print('ray' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr[-2000:]
