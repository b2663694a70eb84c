"""The main job end to end: a micro sweep against a real `mlflow server`, and a Ctrl+C.

The micro sweep is the pruned one under ASHA (one sweep, both paths: each costs minutes of
process starts): every tokenizer is trained and evaluated, the gFID proxy keeps one point, and
that point's generator trains in ASHA rounds.

Stopping a sweep mid-stage and resuming it are tested where users do it: `ray job stop` then a
resubmit, on object storage (test_readme_cluster.py); a node lost mid-generator
(test_cluster.py).

Each sweep runs the CLI in a subprocess (its own local Ray, as a user's shell would), with the
storage under tmp; assertions go through `MlflowClient` and the files the sweep wrote.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import as_in_a_terminal
from mlflow import MlflowClient

from orchestrator.sweep.tracking import run_page

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every tokenizer family runs end to end in one of the cluster tests; here EQ-VAE and l-DeTok,
# both with the VF loss (the micro preset aligns to the stand-in ViT): each trains and is
# evaluated, and the one the proxy keeps goes on to its cache and generator.
SPACE = """\
name: {name}
preset: micro
search:
  grid:
    tokenizer.family: [eqvae, detok]
"""

# The same points pruned to one by the default proxy (iFID's FD-proxy twin here; exactly `keep`:
# no Pareto additions), and the kept point under ASHA: the generator trains in rounds of 4 steps,
# each scored by fd_intermediate. A grace period of 2 rounds (= all 8 steps) lets it finish.
PRUNED_ASHA = """\
base:
  evaluation: {intermediate_every: 4, proxy_train_images: 60}
search:
  scheduler: {type: asha, grace_period: 2}
  prune: {keep: 1, keep_pareto: false}
"""


def write_space(tmp_path: Path, name: str, *, pruned_asha: bool = False) -> Path:
    path = tmp_path / f"{name}.yaml"
    data = yaml.safe_load(SPACE.format(name=name))
    if pruned_asha:
        extra = yaml.safe_load(PRUNED_ASHA)
        data["base"] = extra["base"]
        data["search"].update(extra["search"])
    path.write_text(yaml.safe_dump(data))
    return path


def frontier_command(space: Path, storage: Path, tracking_uri: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestrator.frontier",
        "--space",
        str(space),
        "--storage",
        str(storage),
        "--tracking-uri",
        tracking_uri,
        *extra,
    ]


def run_frontier(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def sweep_runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ldm.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, children


def test_pruned_asha_micro_sweep_logs_parent_children_metrics_and_frontier(tmp_path, mlflow_server):
    storage = tmp_path / "store"
    result = run_frontier(
        frontier_command(
            write_space(tmp_path, "micro_a", pruned_asha=True), storage, mlflow_server.uri
        )
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "frontier chart:" in result.stdout and "trials: 1 finished" in result.stdout
    assert "pruning by ifd_proxy_40" in result.stdout
    # The measured budget: the share of core-seconds spent inside steps and evaluation batches.
    share = re.search(r"compute: (\d+)% of (\d+) cores", result.stdout)
    assert share and 0 < int(share.group(1)) <= 100, result.stdout[-2000:]

    client = MlflowClient(mlflow_server.uri)
    parents, children = sweep_runs(client, "micro_a")
    assert len(parents) == 1 and len(children) == 2
    assert {r.info.status for r in [*parents, *children]} == {"FINISHED"}
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.params["tokenizer.family"] for c in children} == {"eqvae", "detok"}
    assert {c.data.params["tokenizer.vf.foundation"] for c in children} == {"standin"}
    for child in children:  # every tokenizer trained and evaluated, proxies with their counts
        assert child.data.params["tokenizer.arch.embed_dim"] == "4"
        for metric in ("psnr", "rfd_proxy_40", "ifd_proxy_40", "lnc_40", "lds"):
            assert math.isfinite(child.data.metrics[metric]), metric
        assert child.data.metrics["time/tokenizer_s"] > 0
        assert "compute/tokenizer_s" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "tokenizer/nll")
        steps = [m.step for m in history]
        assert len(steps) >= 2 and steps == sorted(steps), steps
    status = {c.data.tags["ldm.status"]: c for c in children}
    assert set(status) == {"trained", "pruned"}
    trained, pruned = status["trained"], status["pruned"]
    assert trained.data.metrics["ifd_proxy_40"] <= pruned.data.metrics["ifd_proxy_40"]
    assert "fd_proxy_40" not in pruned.data.metrics
    assert parent.data.metrics["pruned_points"] == 1
    assert parent.data.metrics["gpu_hours_saved_by_pruning"] > 0

    # The kept point: every stage's wall seconds and the unit-seconds it computed (budget.py).
    for stage in ("latent_cache", "generator", "generator_eval"):
        assert trained.data.metrics[f"time/{stage}_s"] > 0, stage
        assert f"compute/{stage}_s" in trained.data.metrics, stage
    assert (
        0 < trained.data.metrics["compute/generator_s"] < trained.data.metrics["time/generator_s"]
    )
    history = client.get_metric_history(trained.info.run_id, "generator/loss")
    steps = [m.step for m in history]
    assert len(steps) >= 2 and steps == sorted(steps), steps
    # Named with their sample counts (micro: 40 images and 40 samples), as --dry-run lists them.
    for metric in (
        "fd_proxy_40",
        "class_consistency_40",
        "precision_proxy_40",
        "recall_proxy_40",
    ):
        assert metric in trained.data.metrics, metric
    # One ASHA round at step 4, scored and logged; the generator then finished to step 8.
    rounds = client.get_metric_history(trained.info.run_id, "fd_intermediate")
    assert [m.step for m in rounds] == [4] and rounds[0].value > 0
    artifacts = {a.path for a in client.list_artifacts(trained.info.run_id, "generator")}
    assert "generator/samples.png" in artifacts

    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"frontier.png", "frontier.csv", "frontier.md", "points"} <= parent_artifacts
    # The trained point's grids one click from the parent run; the table is its description.
    folders = client.list_artifacts(parent.info.run_id, "points")
    assert len(folders) == 1
    grids = {
        a.path.rsplit("/", 1)[1] for a in client.list_artifacts(parent.info.run_id, folders[0].path)
    }
    assert grids == {"reconstructions.png", "samples.png"}, folders[0].path
    assert "Frontier of `micro_a`" in parent.data.tags["mlflow.note.content"]
    # A model-training experiment, not a GenAI one.
    experiment = client.get_experiment_by_name("micro_a")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # The printed link opens the parent run on its chart, in that view too (MLflow 3.17).
    page = run_page(mlflow_server.uri, experiment.experiment_id, parent.info.run_id, "frontier.png")
    assert page in result.stdout, result.stdout[-2000:]
    csv = (storage / "sweeps" / "micro_a" / "frontier.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert len(csv) == 3 and "on_front" in header and "fd_proxy_40" in header
    statuses = sorted(line.split(",")[header.index("status")] for line in csv[1:])
    assert statuses == ["pruned", "trained"]


def test_the_experiment_opens_in_the_model_training_view(mlflow_server):
    """The experiment's kind tag, on a new experiment and on a reused one (from before the tag,
    or one a UI guessed to be GenAI); and the link the sweep prints, whose `workflowType` is
    what the served MLflow UI takes its view from."""
    import urllib.request

    from orchestrator.sweep.tune import ensure_experiment

    client = MlflowClient(mlflow_server.uri)
    new = ensure_experiment(client, "kind_new", None)
    older = client.create_experiment("kind_older")
    guessed = client.create_experiment(
        "kind_guessed", tags={"mlflow.experimentKind": "genai_development"}
    )
    for name, experiment_id in (
        ("kind_new", new),
        ("kind_older", older),
        ("kind_guessed", guessed),
    ):
        assert ensure_experiment(client, name, None) == experiment_id
        kind = client.get_experiment(experiment_id).tags["mlflow.experimentKind"]
        assert kind == "custom_model_development", name

    run = client.create_run(new).info.run_id
    page = run_page(f"{mlflow_server.uri}/", new, run, "frontier.png")
    assert page == (
        f"{mlflow_server.uri}/#/experiments/{new}/runs/{run}/artifacts/frontier.png"
        "?workflowType=machine_learning"
    )
    with urllib.request.urlopen(mlflow_server.uri, timeout=10) as response:
        script = re.search(
            r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', response.read().decode()
        )
    assert script, "no UI bundle in the server's page"
    with urllib.request.urlopen(f"{mlflow_server.uri}/{script.group(1)}", timeout=30) as response:
        bundle = response.read().decode()
    for needle in (
        '.get("workflowType")',
        '"machine_learning"',
        "/experiments/:experimentId/runs/",
    ):
        assert needle in bundle, needle


def test_ctrl_c_while_preparing_exits_130_and_closes_the_parent_run(tmp_path, mlflow_server):
    from orchestrator.sweep.tune import INTERRUPTED

    cmd = frontier_command(write_space(tmp_path, "micro_c"), tmp_path / "store", mlflow_server.uri)
    sweep = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=as_in_a_terminal,
    )
    for line in sweep.stdout:
        if line.startswith("preparing the shared inputs"):  # Ray is up, Tune not yet
            sweep.send_signal(signal.SIGINT)
            break
    output = sweep.communicate(timeout=180)[0]
    assert sweep.returncode == 130, output[-4000:]
    assert INTERRUPTED in output and "Traceback" not in output, output[-4000:]
    parents, children = sweep_runs(MlflowClient(mlflow_server.uri), "micro_c")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "RUNNING" not in {c.info.status for c in children}


def test_trials_never_started_count_as_unfinished():
    """A Ctrl+C between two trials leaves the later ones out of Tune's result grid; the sweep must
    still call itself interrupted (exit 130), not finished."""
    from types import SimpleNamespace

    from orchestrator.sweep.tune import trial_outcomes

    finished = SimpleNamespace(error=None, metrics={"point_done": 1})
    stopped = SimpleNamespace(error=None, metrics={"done": True})
    failed = SimpleNamespace(error=RuntimeError("boom"), metrics=None)
    assert trial_outcomes([finished], planned=2) == {
        "finished": 1,
        "stopped early": 0,
        "failed": 0,
        "unfinished": 1,
    }
    assert trial_outcomes([finished, stopped, failed], planned=3) == {
        "finished": 1,
        "stopped early": 1,
        "failed": 1,
        "unfinished": 0,
    }
