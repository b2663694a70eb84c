"""The cluster path on one machine: a Ray head with token auth, a job submitted with the
runtime env of cluster/runtime_env.yaml (the working dir is uploaded, not shared), as
`ray job submit --runtime-env cluster/runtime_env.yaml -- python -m orchestrator.frontier ...`
does on a real cluster. The head is the `local_ray_head` fixture of conftest.py. A whole sweep
submitted as a job, stopped, resubmitted and checked for strays: test_readme_cluster.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import REPO_ROOT, load_runtime_env


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
