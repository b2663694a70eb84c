"""A laptop run's private Ray listens on loopback only: the CLI's `init_ray` after
`loopback_only` (what `python -m orchestrator.frontier` does without RAY_ADDRESS), a task and an
actor running, then every listening socket of the process tree is listed.
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

actor = Echo.remote()
ray.get([actor.ping.remote(), task.remote()])
me = psutil.Process()
listeners = []
for proc in [me, *me.children(recursive=True)]:
    try:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listeners.append([proc.name(), conn.laddr.ip, conn.laddr.port])
    except psutil.Error:
        pass
print("LISTENERS " + json.dumps(listeners))
ray.shutdown()
"""

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listeners(mode: str) -> list[list]:
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("LISTENERS ")), None)
    assert line, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(line.removeprefix("LISTENERS "))


def test_the_private_ray_of_a_laptop_run_listens_on_loopback_only():
    found = listeners("cli")
    names = {name for name, _, _ in found}
    assert {"gcs_server", "raylet"} <= names, found  # the check saw Ray's own processes
    assert [x for x in found if x[1] not in LOOPBACK] == []
