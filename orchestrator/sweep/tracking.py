"""MLflow for the sweep: one experiment per sweep, a parent run, a nested child run per trial.

Stages log into their trial's child run by id (`RunLogger`), from the driver or from rank 0 of a
Train worker. Nesting uses the `mlflow.parentRunId` tag (neither Ray helper takes a parent id).
MLflow's plain folder store is refused since 3.13, so the default is SQLite under the storage
dir; never the process CWD (each Ray worker has its own).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

PARENT_TAG = "mlflow.parentRunId"
# `mlflow ui`'s address when started without --host/--port.
MLFLOW_UI = "http://127.0.0.1:5000"


def default_tracking_uri(configured: str | None, storage_root: Path | None) -> str:
    """Flag/config, else $MLFLOW_TRACKING_URI, else SQLite under local storage."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if storage_root is None:
        raise ValueError(
            "object-store storage needs an MLflow server: pass --tracking-uri or set MLFLOW_TRACKING_URI"
        )
    db = storage_root / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def artifact_location(tracking_uri: str, storage_root: Path | None, storage_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite store; in the object
    store itself when `--storage` is one (every process uploads there directly); else the
    tracking server's own artifact store."""
    if storage_root is None:
        return f"{storage_uri}/mlflow/artifacts"
    if tracking_uri.startswith("sqlite:"):
        return str(storage_root / "mlflow" / "artifacts")
    return None


def run_page(server: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page in the MLflow UI (or one of its artifacts there), in the model-training view:
    MLflow 3.17's UI takes its view from the link's `workflowType`, else from the browser's last
    choice, GenAI by default; the experiment's kind tag no longer picks it."""
    page = f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    if artifact is not None:
        page += f"/artifacts/{artifact}"
    return f"{page}?workflowType=machine_learning"


@dataclass(frozen=True)
class RunRef:
    """What a Ray worker needs to log into an existing run (picklable, no client inside)."""

    tracking_uri: str
    run_id: str

    def to_dict(self) -> dict[str, str]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id}


class RunLogger:
    """Logs metrics/params/artifacts into one existing run; a no-op when given no run."""

    def __init__(self, ref: RunRef | None, prefix: str = ""):
        self.ref = ref
        self.prefix = prefix
        self._client = None
        if ref is not None:
            from mlflow import MlflowClient

            self._client = MlflowClient(ref.tracking_uri)

    @classmethod
    def from_dict(cls, data: dict | None, prefix: str = "") -> RunLogger:
        return cls(RunRef(**data) if data else None, prefix)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._client is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(f"{self.prefix}{k}", float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        if batch:
            self._client.log_batch(self.ref.run_id, metrics=batch)

    def log_params(self, params: dict[str, object]) -> None:
        if self._client is None:
            return
        from mlflow.entities import Param

        # MLflow caps a param value at 6000 characters.
        batch = [Param(f"{self.prefix}{k}", str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(batch), 100):
            self._client.log_batch(self.ref.run_id, params=batch[start : start + 100])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._client is not None:
            self._client.log_artifact(self.ref.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._client is not None:
            for key, value in tags.items():
                self._client.set_tag(self.ref.run_id, key, value)
