"""The README's one-machine Ray job commands, run as written: a loopback head started from the
project's environment with token auth, `ray job submit`, `ray job logs`, `ray job stop` mid-run,
then a resubmit that finishes the sweep. The commands come from the README's fenced block, so
the docs cannot drift from what works.

Substituted, as the comment above that block says: the two ports (free ones here), the storage
(under tmp), `--space smoke` (a one-point micro space), the venv path, free ports for the head's
other services; `ray stop` is replaced by
ending this head's own process group (`ray stop` would end every Ray instance on the machine).
One test, one head: about as long as two micro sweeps, the price of testing what users type.
The job writes only under its `--storage`: nothing in the checkout, the uploaded working dir or
~/ray_results.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import as_in_a_terminal, free_ports
from mlflow import MlflowClient

from orchestrator.sweep.tune import INTERRUPTED

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOCK_MARKER = "tests/test_readme_cluster.py runs this block"
# Names that a sweep writing outside its --storage would leave behind (MLflow's CWD defaults,
# Tune/Train's ~/ray_results, the CLI's ./runs default).
STRAY_OUTPUTS = ("runs", "mlruns", "mlflow.db", "mlartifacts", "ray_results")
# Where the README's head (default temp dir) keeps its session.
RAY_TMP = Path("/tmp/ray")
# The live view's line of a point in its tokenizer stage ("  <label>: tokenizer step 2/8 ..."),
# not the plan's cost line, which names the stage too.
TOKENIZER_TRAINING = re.compile(r"^  .+: tokenizer( step|$)")


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    after = text[text.index(BLOCK_MARKER) :]
    block = re.search(r"```bash\n(.*?)```", after, re.S)
    assert block, "the README's tested block is gone"
    return [line for line in block.group(1).splitlines() if line.strip()]


# Ray's other fixed default ports (the dashboard agent's 52365, the client server's 10001, ...)
# would collide with other Ray instances of a busy test machine: free ones are added.
EXTRA_PORT_FLAGS = (
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)


def substitute(line: str, tmp_path: Path, space: Path, ports: list[int]) -> str:
    venv = Path(sys.executable).parent.parent
    extra = " ".join(f"--{flag}={port}" for flag, port in zip(EXTRA_PORT_FLAGS, ports[2:]))
    low = 20000 + ports[0] % 20 * 500  # worker ports away from Ray's default 10002-19999
    extra += f" --min-worker-port={low} --max-worker-port={low + 499}"
    return (
        line.replace("ray start --head", f"ray start --head {extra}")
        .replace("--port=6379", f"--port={ports[0]}")
        .replace("8265", str(ports[1]))
        .replace("/tmp/ldm-runs", str(tmp_path / "runs"))
        .replace("--space smoke", f"--space {space}")
        .replace("source .venv/", f"source {venv}/")
    )


def mlflow_states(storage: Path, experiment: str) -> tuple[list[str], list[str]]:
    client = MlflowClient(f"sqlite:///{storage / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r.info.status for r in runs if r.data.tags.get("ldm.role") == "parent"]
    children = [r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, children


def non_loopback_listeners(pgid: int) -> list[tuple[str, str]]:
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in loopback:
                    found.append((proc.name(), f"{conn.laddr.ip}:{conn.laddr.port}"))
        except (psutil.Error, ProcessLookupError):
            continue
    return found


@pytest.mark.timeout(1500)
def test_readme_ray_job_commands_work_as_written(tmp_path):
    commands = readme_commands()
    head_end = next(i for i, c in enumerate(commands) if c.startswith("export RAY_API_SERVER"))
    setup, jobs = commands[: head_end + 1], commands[head_end + 1 :]
    assert jobs[-1] == "ray stop" and any(c.startswith("ray job stop") for c in jobs)

    name = "readme_job"
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "preset": "micro",
                # Every tokenizer family runs end to end in one of the cluster tests; here EQ-VAE.
                "base": {"tokenizer": {"family": "eqvae"}},
                "search": {"grid": {"tokenizer.vf.foundation": ["none"]}},
            }
        )
    )
    ports = free_ports(2 + len(EXTRA_PORT_FLAGS))
    storage = tmp_path / "runs"
    repo_before = {p.name for p in REPO_ROOT.iterdir()}
    sessions_before = set(RAY_TMP.glob("session_2*"))
    ray_results = Path.home() / "ray_results"
    results_before = set(ray_results.rglob("*")) if ray_results.is_dir() else set()
    env_file, head_log = tmp_path / "env", tmp_path / "head.log"
    script = "\n".join(substitute(c, tmp_path, space, ports) for c in setup)
    skip = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    base_env = {k: v for k, v in os.environ.items() if k not in skip}
    with open(head_log, "wb") as log:
        # Own session: the head's daemons stay in this process group, ended at the end.
        shell = subprocess.Popen(
            ["bash", "-c", f"set -e\n{script}\nenv -0 > {env_file}"],
            cwd=REPO_ROOT,
            env=base_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgid = shell.pid
    try:
        assert shell.wait(timeout=240) == 0, head_log.read_text()[-4000:]
        env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"]

        def run(line: str, timeout: float = 900) -> subprocess.CompletedProcess:
            cmd = substitute(line, tmp_path, space, ports)
            return subprocess.run(
                ["bash", "-c", cmd], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip

        submit, follow, stop, resubmit, _ = jobs
        first = run(submit, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr

        # `ray job logs --follow` until the tokenizer trains; then detach, as Ctrl+C would.
        logs = subprocess.Popen(
            ["bash", "-c", substitute(follow, tmp_path, space, ports)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=as_in_a_terminal,
        )  # fmt: skip
        seen = []
        deadline = time.monotonic() + 600
        for line in logs.stdout:
            seen.append(line)
            if TOKENIZER_TRAINING.match(line) or time.monotonic() > deadline:
                break
        logs.send_signal(signal.SIGINT)
        logs.wait(timeout=30)
        assert seen and TOKENIZER_TRAINING.match(seen[-1]), "".join(seen)[-4000:]
        # A one-machine head listens on loopback only.
        assert not non_loopback_listeners(pgid)

        stopped = run(stop, timeout=180)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        job_id = submit.split("--submission-id ")[1].split()[0]
        status = run(f"ray job status {job_id}")
        assert "was stopped" in status.stdout, status.stdout + status.stderr
        # The driver handled the SIGTERM: its one line, no traceback on the terminal.
        stopped_logs = run(f"ray job logs {job_id}").stdout
        assert INTERRUPTED in stopped_logs, stopped_logs[-4000:]
        assert "Traceback" not in stopped_logs, stopped_logs[-4000:]
        parents, children = mlflow_states(storage, name)
        assert parents == ["KILLED"], (parents, children)
        assert children and set(children) == {"KILLED"}, children

        done = run(resubmit)
        driver_log = storage / "sweeps" / name / "driver.log"
        assert done.returncode == 0, done.stdout[-3000:] + driver_log.read_text()[-6000:]
        assert "succeeded" in (done.stdout + done.stderr).lower()
        assert "frontier chart:" in done.stdout, done.stdout[-4000:]
        parents, children = mlflow_states(storage, name)
        assert parents == ["FINISHED"] and children == ["FINISHED"], (parents, children)
        # Everything under --storage, nothing anywhere else.
        stages = "datasets models tokenizers tokenizer_eval caches generators generator_eval"
        for stage in stages.split():
            assert any((storage / stage).iterdir()), f"stage output {stage}/ missing in storage"
        new_in_repo = {p.name for p in REPO_ROOT.iterdir()} - repo_before
        assert not new_in_repo & set(STRAY_OUTPUTS), new_in_repo
        # The head's session holds the uploaded working dir: one of the sessions started since
        # this test began (not necessarily the newest: any other Ray on the machine moves
        # session_latest).
        uploads = [
            resources
            for session in set(RAY_TMP.glob("session_2*")) - sessions_before
            if (resources := session / "runtime_resources").is_dir()
        ]
        assert uploads, "no Ray session started by this test holds the uploaded working dir"
        uploaded = [p for r in uploads for p in r.rglob("*") if p.name in STRAY_OUTPUTS]
        assert not uploaded, uploaded
        if ray_results.is_dir():
            assert not set(ray_results.rglob("*")) - results_before, "wrote into ~/ray_results"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(3.0)
