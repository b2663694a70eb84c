"""A sweep on object storage for real: moto's S3 server on 127.0.0.1 as `--storage s3://...`.

Every stage writes and reads through the store (weights through the URI reader), MLflow's
artifacts go to the same bucket, and the only local files are the documented ones: the input
image tree (`dataset.root`), the local cache (`LDM_CACHE_DIR`) and the tracking database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "frontier"


@pytest.fixture
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
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


# A whole sweep on a simulated cluster: minutes on 2 cores, more on a loaded machine.
@pytest.mark.timeout(1800)
def test_sweep_on_s3_interrupted_and_resumed(tmp_path, s3_endpoint, monkeypatch):
    import boto3
    from mlflow import MlflowClient

    from orchestrator.sweep.tune import INTERRUPTED

    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, "LDM_CACHE_DIR": str(tmp_path / "cache")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    space = tmp_path / "s3sweep.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "name": "s3sweep",
                "preset": "micro",
                # Every tokenizer family runs end to end in one of the cluster tests; here
                # REPA-E, its latent statistics exported next to the weights in the bucket.
                "base": {
                    "dataset": {"root": str(tmp_path / "images")},
                    "tokenizer": {"family": "repae"},
                },
                "search": {"grid": {"tokenizer.vf.foundation": ["standin"]}},
            }
        )
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    cmd = [
        sys.executable, "-m", "orchestrator.frontier", "--space", str(space),
        "--storage", f"s3://{BUCKET}/sweeps-root", "--tracking-uri", tracking,
    ]  # fmt: skip
    first = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # SIGTERM (what `ray job stop` and Kubernetes send) once the latent cache is in the bucket,
    # as the generator starts: it ends like Ctrl+C, and the generator stages are left to resume.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if any(k.endswith("DONE.json") for k in keys(s3, "sweeps-root/caches/")):
            first.send_signal(signal.SIGTERM)
            break
        time.sleep(1.0)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 130, out[-4000:]
    assert INTERRUPTED in out and "Traceback" not in out, out[-4000:]
    assert not keys(s3, "sweeps-root/generator_eval/")
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("s3sweep").experiment_id
    runs = client.search_runs([experiment])
    # The parent and the stopped point read KILLED (a stop, not a failure).
    assert sorted((r.data.tags.get("ldm.role"), r.info.status) for r in runs) == [
        ("parent", "KILLED"),
        ("point", "KILLED"),
    ]

    second = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    stored = keys(s3, "sweeps-root/")
    for stage in ("tokenizers", "tokenizer_eval", "caches", "generators", "generator_eval"):
        assert any(
            k.startswith(f"sweeps-root/{stage}/") and k.endswith("DONE.json") for k in stored
        )
    assert any(k.startswith("sweeps-root/sweeps/s3sweep/tune/") for k in stored)
    assert any(k.startswith("sweeps-root/models/standin-") for k in stored)
    # REPA-E's latent BatchNorm statistics, exported beside its weights: the cache's statistics.
    assert any(k.endswith("/export/latent_stats.safetensors") for k in stored)
    assert any(k.startswith("sweeps-root/models/proxy-") for k in stored)
    # MLflow's artifacts (config, grids, the frontier) sit in the same bucket.
    artifacts = [k for k in stored if k.startswith("sweeps-root/mlflow/artifacts/")]
    assert any(k.endswith("resolved_config.yaml") for k in artifacts)
    assert any(k.endswith(".png") for k in artifacts)
    runs = client.search_runs([experiment])
    # The resume finished the same parent and point runs: no duplicates.
    assert sorted(r.data.tags.get("ldm.role") for r in runs) == ["parent", "point"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # Nothing written to the working directory; the local cache holds only copies and logs.
    assert list(workdir.iterdir()) == []
    assert {p.name for p in (tmp_path / "cache").iterdir()} <= {"builds", "copies", "logs"}
