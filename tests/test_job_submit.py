"""The cluster path end to end on one machine: a Ray head with token auth, a job submitted with the
runtime env of cluster/runtime_env.yaml (the working dir is uploaded, not shared), as
`ray job submit --runtime-env cluster/runtime_env.yaml -- python -m orchestrator.frontier ...`
does on a real cluster. The head is the `local_ray_head` fixture of conftest.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from cluster import REPO_ROOT, load_runtime_env

# Names that a sweep writing outside its --storage would leave behind (MLflow's CWD defaults,
# Tune/Train's ~/ray_results, the CLI's ./runs default).
STRAY_OUTPUTS = ("runs", "mlruns", "mlflow.db", "mlartifacts", "ray_results")


def test_head_rejects_a_wrong_token(local_ray_head):
    from ray.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError):
        local_ray_head.client(token="not-the-token").list_jobs()


def test_dry_run_job_succeeds_with_the_cluster_runtime_env(local_ray_head):
    runtime_env = load_runtime_env()
    assert Path(runtime_env["working_dir"]) == REPO_ROOT

    run = local_ray_head.submit(
        "python -m orchestrator.frontier --dry-run --space smoke", runtime_env, timeout=240
    )
    print(run)  # pytest shows the job's logs when an assertion below fails

    assert run.status == "SUCCEEDED", run.status
    # The plan printed by the uploaded code, and nothing started.
    assert "sweep `smoke`" in run.logs, run.status
    assert "6 points" in run.logs, run.status


@pytest.mark.timeout(1200)
def test_micro_sweep_job_writes_only_under_its_storage(local_ray_head, tmp_path):
    name = f"cluster_micro_{uuid.uuid4().hex[:8]}"
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "description": "a micro point submitted as a Ray job",
                "preset": "micro",
                "search": {
                    "algorithm": "grid",
                    "grid": {"tokenizer.vf.foundation": ["standin"]},
                },
            }
        )
    )
    storage = tmp_path / "storage"
    tracking_db = tmp_path / "mlflow.db"
    repo_before = {p.name for p in REPO_ROOT.iterdir()}
    home_results = Path.home() / "ray_results"

    runtime_env = load_runtime_env(env_vars={"HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"})
    run = local_ray_head.submit(
        f"python -m orchestrator.frontier --space {space} --storage {storage} "
        f"--tracking-uri sqlite:///{tracking_db}",
        runtime_env,
        timeout=900,
    )
    print(run)

    assert run.status == "SUCCEEDED", run.status
    # The storage setting is where the job actually wrote.
    assert tracking_db.is_file(), run.status
    assert (storage / "sweeps" / name).is_dir(), sorted(p.name for p in storage.iterdir())
    stages = "datasets models tokenizers tokenizer_eval caches generators generator_eval"
    for stage in stages.split():
        assert any((storage / stage).iterdir()), f"stage output {stage}/ missing in storage"
    # ... and nowhere else: not in the checkout, not in the uploaded working dir (the job's CWD,
    # inside the head's temp dir), not in ~/ray_results.
    new_in_repo = {p.name for p in REPO_ROOT.iterdir()} - repo_before
    assert not new_in_repo & set(STRAY_OUTPUTS), new_in_repo
    strays = [
        p
        for p in local_ray_head.temp_dir.rglob("*")
        if p.name in STRAY_OUTPUTS and "runtime_resources" in p.parts
    ]
    assert not strays, strays
    if home_results.is_dir():
        assert not [p for p in home_results.rglob(f"*{name}*")], "wrote into ~/ray_results"
