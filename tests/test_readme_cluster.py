"""The README's one-machine Ray job commands, run as written, against object storage for real:
a loopback head started from the project's environment with token auth, `ray job submit`,
`ray job logs`, `ray job stop` mid-run, then a resubmit that finishes the sweep, with
`--storage s3://...` on moto's S3 server (127.0.0.1). The commands come from the README's fenced
block, so the docs cannot drift from what works.

Substituted, as the comment above that block says: the two ports (free ones here), the storage
(an S3 bucket on loopback here, as a cluster's sweep would use), `--space smoke` (a one-point
micro space), the venv path, free ports for the head's other services; `ray stop` is replaced by
ending this head's own process group (`ray stop` would end every Ray instance on the machine).
The S3 endpoint, its credentials, the tracking database and the local cache reach the job the
way a cluster passes them: from the head's environment.

One test, one head, one store: a stop and a resume, as users type them, on the store a cluster
uses. Every stage writes and reads the bucket (weights through the URI reader), MLflow's
artifacts go there too, and the only local files are the documented ones: the input image tree
(`dataset.root`), the local cache (`LDM_CACHE_DIR`) and the tracking database. Nothing lands in
the checkout, the uploaded working dir or ~/ray_results.
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
BUCKET = "frontier"
# A user who submits right after `ray start` can meet the head's job agent still starting:
# Ray answers this (after waiting 10 s for it) and asks to try again, which the test does.
AGENT_NOT_READY = "No available agent to submit job"
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


@pytest.fixture
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    # pyarrow, boto3 (MLflow's artifact client) and Ray all read the endpoint from here.
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def keys(client, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def substitute(line: str, storage: str, space: Path, ports: list[int]) -> str:
    venv = Path(sys.executable).parent.parent
    extra = " ".join(f"--{flag}={port}" for flag, port in zip(EXTRA_PORT_FLAGS, ports[2:]))
    low = 20000 + ports[0] % 20 * 500  # worker ports away from Ray's default 10002-19999
    extra += f" --min-worker-port={low} --max-worker-port={low + 499}"
    return (
        line.replace("ray start --head", f"ray start --head {extra}")
        .replace("--port=6379", f"--port={ports[0]}")
        .replace("8265", str(ports[1]))
        .replace("/tmp/ldm-runs", storage)
        .replace("--space smoke", f"--space {space}")
        .replace("source .venv/", f"source {venv}/")
    )


def mlflow_states(tracking: str, experiment: str) -> tuple[list[str], list[str]]:
    client = MlflowClient(tracking)
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
def test_readme_ray_job_commands_work_as_written_on_s3(tmp_path, s3_endpoint):
    import boto3

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
                # Every tokenizer family runs end to end in one of the cluster tests; here
                # REPA-E, its latent statistics exported next to its weights in the bucket.
                "base": {
                    "dataset": {"root": str(tmp_path / "images")},
                    "tokenizer": {"family": "repae"},
                    # As on a cluster: Train ranks stream through Ray Data, and the cache and
                    # evaluations run on actor pools (the micro preset does neither).
                    "resources": {"in_worker_data_mb": 0},
                    "cache": {"num_actors": None},
                    "evaluation": {"num_workers": None},
                },
                "search": {"grid": {"tokenizer.vf.foundation": ["standin"]}},
            }
        )
    )
    ports = free_ports(2 + len(EXTRA_PORT_FLAGS))
    creds = s3_env(s3_endpoint)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=creds["AWS_DEFAULT_REGION"],
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    storage = f"s3://{BUCKET}/sweeps-root"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = tmp_path / "cache"
    repo_before = {p.name for p in REPO_ROOT.iterdir()}
    sessions_before = set(RAY_TMP.glob("session_2*"))
    ray_results = Path.home() / "ray_results"
    results_before = set(ray_results.rglob("*")) if ray_results.is_dir() else set()
    env_file, head_log = tmp_path / "env", tmp_path / "head.log"
    script = "\n".join(substitute(c, storage, space, ports) for c in setup)
    skip = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    base_env = {k: v for k, v in os.environ.items() if k not in skip}
    # What a cluster's head would hold in its environment (and hand to every job and worker).
    base_env.update(creds, MLFLOW_TRACKING_URI=tracking, LDM_CACHE_DIR=str(cache))
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
            cmd = substitute(line, storage, space, ports)
            return subprocess.run(
                ["bash", "-c", cmd], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip

        def submit_as_a_user(line: str, timeout: float = 900) -> subprocess.CompletedProcess:
            # Up to a minute of "try again later" while the head's job agent starts.
            for _ in range(30):
                done = run(line, timeout)
                if done.returncode == 0 or AGENT_NOT_READY not in done.stdout + done.stderr:
                    return done
                time.sleep(2.0)
            return done

        submit, follow, stop, resubmit, _ = jobs
        first = submit_as_a_user(submit, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr

        # `ray job logs --follow` until the tokenizer trains; then detach, as Ctrl+C would.
        logs = subprocess.Popen(
            ["bash", "-c", substitute(follow, storage, space, ports)],
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
        # The parent and the stopped point read KILLED (a stop, not a failure).
        parents, children = mlflow_states(tracking, name)
        assert parents == ["KILLED"], (parents, children)
        assert children and set(children) == {"KILLED"}, children
        assert not keys(s3, "sweeps-root/generator_eval/")

        done = submit_as_a_user(resubmit)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in (done.stdout + done.stderr).lower()
        assert "frontier chart:" in done.stdout, done.stdout[-4000:]
        # The resume finished the same parent and point runs: no duplicates.
        parents, children = mlflow_states(tracking, name)
        assert parents == ["FINISHED"] and children == ["FINISHED"], (parents, children)

        # Every stage wrote to the bucket, and nothing anywhere else but the documented files.
        stored = keys(s3, "sweeps-root/")
        for stage in ("tokenizers", "tokenizer_eval", "caches", "generators", "generator_eval"):
            assert any(
                k.startswith(f"sweeps-root/{stage}/") and k.endswith("DONE.json") for k in stored
            ), f"stage output {stage}/ missing in the bucket"
        assert any(k.startswith(f"sweeps-root/sweeps/{name}/tune/") for k in stored)
        assert any(k.startswith("sweeps-root/models/standin-") for k in stored)
        assert any(k.startswith("sweeps-root/models/proxy-") for k in stored)
        # REPA-E's latent BatchNorm statistics, exported beside its weights: the cache's.
        assert any(k.endswith("/export/latent_stats.safetensors") for k in stored)
        # MLflow's artifacts (config, grids, the frontier) sit in the same bucket.
        artifacts = [k for k in stored if k.startswith("sweeps-root/mlflow/artifacts/")]
        assert any(k.endswith("resolved_config.yaml") for k in artifacts)
        assert any(k.endswith(".png") for k in artifacts)
        # The local cache holds only copies of frozen networks, build locks and the driver log.
        assert {p.name for p in cache.iterdir()} <= {"builds", "copies", "logs"}
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
