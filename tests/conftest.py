"""Shared test settings: offline, CPU DeepSpeed, quiet Ray; and shared fixtures."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Offline by construction: an accidental hub download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
# Simulated multi-node clusters (`ray.cluster_utils.Cluster`) keep every node on 127.0.0.1;
# read when Ray is imported, so it is set before any test module imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# ---- BEGIN cluster job-submission fixtures (issue 9: cluster/, tests/test_job_submit.py) ----
# A throwaway Ray head for tests that submit jobs the way a cluster user does (JobSubmissionClient
# with the runtime env of cluster/runtime_env.yaml). It is a `ray start --head --block` child
# process on free ports with its own temp dir, stopped by terminating that process: never
# `ray stop`, which kills every Ray instance on the machine, other tests' included. Token auth is
# on, with a fresh token handed explicitly to the head (env) and the client (header), as a
# cluster's Secret would be.
import pytest  # noqa: E402


def as_in_a_terminal() -> None:
    """`preexec_fn` of a command the tests stop with Ctrl+C: SIGINT reaches it as in a terminal,
    however pytest was started (a background job of a non-interactive shell, `pytest &` in a
    script, hands its children SIGINT ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1: all sockets stay bound until every port is picked."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def run_sweep(space: Path, storage: Path, trials: int):
    """`python -m orchestrator.frontier --space SPACE --storage STORAGE` as a user runs it (its
    own local Ray, MLflow on SQLite under the storage); asserts exit 0 and `trials` finished."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.frontier", "--space", str(space)]
        + ["--storage", str(storage)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"trials: {trials} finished" in result.stdout, result.stdout[-2000:]
    return result


class LocalRayHead:
    """One local head node with the Jobs API; `submit()` runs a job to the end and keeps its logs."""

    PORT_FLAGS = (
        "port",
        "dashboard-port",
        "ray-client-server-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
        "node-manager-port",
        "object-manager-port",
    )

    def __init__(self, num_cpus: int = 4):
        import secrets
        import tempfile

        self.num_cpus = num_cpus
        self.token = secrets.token_hex(24)
        # Short and under /tmp: Ray puts unix sockets in it (107-byte path limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ldmhead", dir="/tmp"))
        self.ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS))))
        self.address = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        self.log_path = self.temp_dir / "head.log"
        self.proc = None

    def start(self, timeout: float = 180.0) -> LocalRayHead:
        import random
        import subprocess
        import time

        # Not someone else's cluster: the job and its client must talk to this head only.
        skip = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
        env = {k: v for k, v in os.environ.items() if k not in skip}
        # The job's `python` must be this interpreter (the venv with torch), as on a cluster
        # node where the image's venv is first on PATH.
        env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        # Worker ports outside Ray's default 10002-19999, which other local clusters use.
        low = random.randrange(20000, 30000, 500)
        cmd = [
            str(Path(PYTHON).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            f"--temp-dir={self.temp_dir}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 499}",
            "--disable-usage-stats",
            *(f"--{flag}={port}" for flag, port in self.ports.items()),
        ]
        with open(self.log_path, "wb") as log:
            # Own session: the fallback in stop() can signal exactly this head's processes.
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, tail = self.proc.returncode, self.log_tail()
                self.stop()
                raise RuntimeError(f"ray start exited with {code}:\n{tail}")
            try:
                self.client().list_jobs()
                return self
            except Exception as err:  # the dashboard is not up yet
                last_error = err
                time.sleep(1.0)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"Ray head not ready after {timeout:.0f}s ({last_error}):\n{tail}")

    def client(self, token: str | None = None):
        from ray.job_submission import JobSubmissionClient

        token = self.token if token is None else token
        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {token}"})

    def submit(self, entrypoint: str, runtime_env: dict | None = None, timeout: float = 300.0):
        """Submit, wait for a terminal state (stopping the job at `timeout`), return a JobRun."""
        import time

        client = self.client()
        submission_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        deadline = time.monotonic() + timeout
        status = client.get_job_status(submission_id)
        while not status.is_terminal() and time.monotonic() < deadline:
            time.sleep(1.0)
            status = client.get_job_status(submission_id)
        if not status.is_terminal():
            client.stop_job(submission_id)
        return JobRun(submission_id, str(status), client.get_job_logs(submission_id))

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        import shutil
        import signal
        import subprocess
        import time

        if self.proc is not None and self.proc.poll() is None:
            # `ray start --block` shuts its own raylet, GCS and dashboard down on SIGTERM.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            # Anything of this head still alive is in its own session (its pgid is its pid).
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(2.0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class JobRun:
    """A finished (or timed-out and stopped) job: its id, final status name and full logs."""

    def __init__(self, submission_id: str, status: str, logs: str):
        self.submission_id = submission_id
        self.status = status
        self.logs = logs

    def __repr__(self) -> str:
        return f"JobRun({self.submission_id}, {self.status})\n--- logs ---\n{self.logs[-6000:]}"


@pytest.fixture(scope="module")
def local_ray_head():
    """A token-authenticated local Ray head with the Jobs API, shared by one test module."""
    head = LocalRayHead().start()
    try:
        yield head
    finally:
        head.stop()


# ---- END cluster job-submission fixtures ----


# ---- BEGIN ray_local fixture (issue 5: data plane; reused by other Ray test modules) ----
# One in-process local Ray instance for the whole session, started as a laptop sweep starts its
# own (`init_ray`: never attaches to another cluster on the machine, same Train settings), and
# `ray.shutdown()` stops only this one (never `ray stop`).
@pytest.fixture(scope="session")
def ray_local():
    import ray

    from orchestrator.sweep.tune import init_ray

    init_ray(cfg_cpus_hint=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


# ---- END ray_local fixture ----


# ---- BEGIN train fixtures (issue 6: orchestrator/train, tests/test_train_*.py) ----
# Tiny configs derived from the `micro` preset and synthetic datasets with the columns the
# workloads read, so the train tests drive the real driver, Ray Train workers and DeepSpeed
# engines (2 workers, gloo) in seconds per step.
class TrainKit:
    ROWS = 32

    @staticmethod
    def config(
        root,
        *,
        zero_stage: int,
        steps: int = 4,
        workers: int = 2,
        checkpoint_every: int = 2,
        max_failures: int = 0,
        nonfinite: str = "stop",
        stages: tuple = (),
    ):
        """Resolved `micro` config with VF on a random stand-in ViT, the GAN from the first
        step, global batch 8, 0.5 CPU per worker (a CPU stays free for Ray Data)."""
        from dataclasses import replace

        from orchestrator.config import PRESETS, resolve
        from orchestrator.config.schema import VFLossConfig

        base = PRESETS["micro"]()

        def training(section):
            return replace(
                section,
                global_batch_size=8,
                steps=steps,
                epochs=None,
                zero_stage=zero_stage,
                log_every=1,
                checkpoint_every=checkpoint_every,
                nonfinite=nonfinite,
            )

        tokenizer = replace(
            base.tokenizer,
            vf=VFLossConfig(foundation="standin", weights="random_init"),
            loss=replace(base.tokenizer.loss, disc_start=0),
            training=training(base.tokenizer.training),
            stages=stages,
        )
        generator = replace(base.generator, training=training(base.generator.training))
        resources = replace(
            base.resources,
            tokenizer_workers=workers,
            generator_workers=workers,
            cpus_per_worker=0.5,
            max_failures=max_failures,
        )
        return resolve(
            replace(
                base,
                tokenizer=tokenizer,
                generator=generator,
                resources=resources,
                storage=str(root),
            )
        )

    @classmethod
    def dataset(cls, cfg, workload: str):
        """(TrainStream, workload inputs): random images, or random latent moments."""
        from orchestrator.data.stream import TrainStream

        if workload == "tokenizer":
            size = cfg.dataset.resolution
            source = SyntheticRows("tokenizer", cls.ROWS, (3, size, size))
            return TrainStream(source, cfg.seed), {"foundation_weights": "random_init"}
        shape = (cfg.generator.model.in_channels, *(2 * [cfg.generator.model.input_size]))
        stats = {"mean": [0.1] * shape[0], "std": [1.2] * shape[0]}
        source = SyntheticRows("generator", cls.ROWS, shape)
        return TrainStream(source, cfg.seed), {"latent_stats": stats}

    @classmethod
    def fit(cls, cfg, workload: str, metrics_path, hooks=None, stream=None, stop_after_step=None):
        """`fit_stage` on `stream` (default: the synthetic data), appending every report to
        `metrics_path`; `stop_after_step` ends the run there as a sweep's training round does."""
        from orchestrator.storage.store import Storage
        from orchestrator.train.callbacks import MetricsFileCallback
        from orchestrator.train.driver import fit_stage

        synthetic, inputs = cls.dataset(cfg, workload)
        return fit_stage(
            cfg,
            Storage.from_uri(cfg.storage),
            workload,
            stream or synthetic,
            inputs=inputs,
            callbacks=[MetricsFileCallback(metrics_path)],
            hooks=hooks,
            stop_after_step=stop_after_step,
        )


@dataclass(frozen=True)
class SyntheticRows:
    """A `RowSource` of random rows, each a function of its row id (a test stand-in for the
    decoded images and cached latents; the stream's order and split are the production ones)."""

    workload: str
    num_rows: int
    shape: tuple

    @property
    def row_bytes(self) -> int:
        import math

        # float32 image, or four float32 moment tensors; an int64 label.
        return (1 if self.workload == "tokenizer" else 4) * 4 * math.prod(self.shape) + 8

    def order(self, seed, epoch):
        import numpy as np

        return np.random.default_rng([seed, epoch]).permutation(self.num_rows)

    def fetch(self, rows, seed, epoch):
        import numpy as np

        draws = [np.random.default_rng([7, int(row)]) for row in rows]
        labels = (np.asarray(rows) % 10).astype(np.int64)
        if self.workload == "tokenizer":
            images = [rng.uniform(-1, 1, self.shape).astype(np.float32) for rng in draws]
            return {"image": np.stack(images), "label": labels}
        means = np.stack([rng.normal(size=(2, *self.shape)).astype(np.float32) for rng in draws])
        logvar = np.full((len(rows), *self.shape), -2.0, np.float32)
        return {
            "mean": means[:, 0],
            "logvar": logvar,
            "mean_flip": means[:, 1],
            "logvar_flip": logvar.copy(),
            "label": labels,
        }


def _ship_by_value() -> None:
    # Ray workers cannot import this conftest: ship the classes it defines by value.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_ship_by_value()


@pytest.fixture(scope="module")
def train_kit(ray_local):
    """Configs, synthetic datasets and `fit` for the train tests, on the shared local Ray."""
    return TrainKit


# ---- END train fixtures ----


# ---- BEGIN MLflow server fixture (issue 8: tests/test_sweep.py) ----
# A real `mlflow server` (SQLite backend) on 127.0.0.1 and a free port, started and stopped by
# the fixture; one worker and no job runner keep it to two processes (environment notes §4).
class MlflowServer:
    def __init__(self, root: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.root = root
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 120.0) -> MlflowServer:
        import subprocess
        import time
        import urllib.request

        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [
            str(Path(PYTHON).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.log = open(self.root / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy after {timeout:.0f}s")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001 - fall back to SIGKILL of the whole group
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


# ---- END MLflow server fixture ----
