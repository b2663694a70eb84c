"""The typed config: YAML round trip, hash stability, validation errors, the CLI's exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from orchestrator.config import (
    PRESETS,
    ConfigError,
    ExperimentConfig,
    content_hash,
    dump_yaml,
    from_dict,
    load_sweep,
    resolve,
    stage_keys,
)
from orchestrator.config.space import build_config, expand
from search_spaces import available, load_space, space_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.frontier", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_yaml_round_trip_is_identical(preset):
    cfg = resolve(PRESETS[preset]())
    text = dump_yaml(cfg)
    again = from_dict(ExperimentConfig, yaml.safe_load(text))
    assert again == cfg
    assert dump_yaml(again) == text
    assert content_hash(again) == content_hash(cfg)


def test_hash_is_stable_across_processes():
    code = (
        "from orchestrator.config import PRESETS, resolve, content_hash;"
        "print(content_hash(resolve(PRESETS['debug_cpu']())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == content_hash(resolve(PRESETS["debug_cpu"]()))


def test_stage_keys_share_tokenizer_but_not_generator():
    base = resolve(PRESETS["debug_cpu"]())
    longer = resolve(
        from_dict(
            ExperimentConfig,
            {**_as_dict(base), "generator": {"training": {"steps": 7, "epochs": None}}},
        )
    )
    a, b = stage_keys(base), stage_keys(longer)
    assert a.tokenizer == b.tokenizer and a.cache == b.cache
    assert a.generator != b.generator and a.generator_eval != b.generator_eval


def test_execution_settings_do_not_change_identity():
    base = resolve(PRESETS["debug_cpu"]())
    data = _as_dict(base)
    data["resources"]["max_concurrent_trials"] = 7
    data["cache"]["batch_size"] = 3
    data["tokenizer"]["training"]["log_every"] = 1
    assert stage_keys(resolve(from_dict(ExperimentConfig, data))) == stage_keys(base)


def _as_dict(cfg):
    return yaml.safe_load(dump_yaml(cfg))


@pytest.mark.parametrize("name", available())
def test_every_shipped_space_validates(name):
    sweep = load_space(name)
    build_config(sweep, {})


def test_smoke_space_has_six_points():
    points = expand(load_space("smoke"))
    assert len(points) == 6
    assert {p.config.tokenizer.arch.embed_dim for p in points} == {4, 8, 16}
    assert {p.config.tokenizer.vf.foundation for p in points} == {"none", "standin"}
    # Generator channels follow the tokenizer.
    assert all(
        p.config.generator.model.in_channels == p.config.tokenizer.arch.embed_dim for p in points
    )


def test_dry_run_paper_table2_prints_nine_tokenizers():
    result = run_cli("--dry-run", "--space", "search_spaces/paper_table2.yaml")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"^\d+\s+\d+px", line)]
    assert len(rows) == 9
    # Columns: index, "256px", "f16", d, vf, m1, m2, vf_weight, ...
    assert {(r[3], r[4]) for r in rows} == {
        (d, vf) for d in ("16", "32", "64") for vf in ("none", "mae", "dinov2")
    }
    assert {(r[5], r[6], r[7]) for r in rows} == {("0.5", "0.25", "0.1")}
    assert "9 tokenizers" in result.stdout
    assert "FID-10K" in result.stdout
    # Per point, what Tune reserves for its trial (sweep/resources.py).
    assert "resources Tune reserves per trial:" in result.stdout
    for index in range(9):
        assert (
            f"point {index}: driver 0 CPU + 8 x (4 CPU + 1 GPU) [GPU if the cluster has one] "
            "= 32 CPU, 8 GPU per trial; up to 1 at once"
        ) in result.stdout


BAD_SPACES = {
    "typo": ("tokenizer: {vf: {cos_margn: 0.5}}", r"cos_margn.*did you mean `cos_margin`"),
    "negative_margin": (
        "tokenizer: {vf: {cos_margin: -0.1}}",
        r"tokenizer\.vf\.cos_margin.*\[0\.0, 2\.0\)",
    ),
    "zero_embed_dim": ("tokenizer: {arch: {embed_dim: 0}}", r"tokenizer\.arch\.embed_dim.*> 0"),
    "channels": (
        "generator: {model: {in_channels: 5}}",
        r"generator\.model\.in_channels.*embed_dim 8",
    ),
    "missing_root": (
        "dataset: {source: folder, root: /nonexistent/imagenet, num_classes: 10}",
        r"dataset\.root.*does not exist: /nonexistent/imagenet",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_exits_2_with_one_line(tmp_path, case):
    base, pattern = BAD_SPACES[case]
    space = tmp_path / f"{case}.yaml"
    space.write_text(
        textwrap.dedent(f"""\
        name: bad
        preset: debug_cpu
        base: {{{base}}}
        """)
    )
    result = run_cli("--dry-run", "--space", str(space))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_typo_in_grid_key_is_caught(tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text(
        "name: g\npreset: debug_cpu\nsearch: {grid: {tokenizer.vf.cos_margn: [0.1]}}\n"
    )
    with pytest.raises(ConfigError, match="did you mean `cos_margin`"):
        load_sweep(space)


def test_unknown_space_name_exits_2():
    result = run_cli("--dry-run", "--space", "no_such_space")
    assert result.returncode == 2
    assert "no space named 'no_such_space'" in result.stderr


def test_cli_set_overrides_apply_and_are_checked():
    ok = run_cli("--dry-run", "--set", "tokenizer.vf.cos_margin=0.3")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("--dry-run", "--set", "tokenizer.vf.cos_margn=0.3")
    assert bad.returncode == 2 and "did you mean `cos_margin`" in bad.stderr


def test_grid_incompatible_with_resolution_is_rejected():
    sweep = load_space("smoke")
    with pytest.raises(ConfigError, match="not divisible"):
        build_config(sweep, {"dataset.resolution": 15})


def test_workloads_never_import_ray():
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "workloads").rglob("*.py")
        if re.search(r"^\s*(import ray|from ray)", path.read_text(), re.M)
    ]
    assert offenders == []


BAD_SEARCHES = {
    # The embedded default reports FD-proxy names; `gfid` would never arrive.
    "metric_not_reported": (
        "{algorithm: optuna, optuna: {space: {tokenizer.vf.vf_weight: {type: uniform, low: 0.01, "
        "high: 1.0}}}}",
        r"search\.optuna\.metrics: `rfid` is not a metric .*rfd_proxy",
    ),
    "bad_distribution": (
        "{algorithm: optuna, optuna: {metrics: [rfd_proxy], modes: [min], space: "
        "{tokenizer.vf.vf_weight: {type: normal, low: 0, high: 1}}}}",
        r"vf_weight\.type: must be one of",
    ),
    "loguniform_from_zero": (
        "{algorithm: optuna, optuna: {metrics: [rfd_proxy], modes: [min], space: "
        "{tokenizer.vf.vf_weight: {type: loguniform, low: 0, high: 1}}}}",
        r"vf_weight: needs 0 < low < high",
    ),
    "asha_without_rounds": (
        "{grid: {tokenizer.arch.embed_dim: [4, 8]}, scheduler: {type: asha}}",
        r"evaluation\.intermediate_every: ASHA needs intermediate evaluations",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SEARCHES))
def test_bad_search_is_refused_before_anything_starts(tmp_path, case):
    search, pattern = BAD_SEARCHES[case]
    space = tmp_path / f"{case}.yaml"
    space.write_text(f"name: s\npreset: debug_cpu\nsearch: {search}\n")
    with pytest.raises(ConfigError, match=pattern):
        load_sweep(space)


def test_asha_rounds_end_before_the_final_step(tmp_path):
    from orchestrator.sweep.pipeline import intermediate_steps

    space = tmp_path / "asha.yaml"
    space.write_text(
        "name: a\npreset: debug_cpu\nbase: {evaluation: {intermediate_every: 300}, "
        "generator: {training: {steps: 800}}}\n"
        "search: {grid: {tokenizer.arch.embed_dim: [4, 8]}, scheduler: {type: asha}}\n"
    )
    cfg = build_config(load_sweep(space), {})
    assert intermediate_steps(cfg) == [300, 600]  # the last round, to 800, is the final run


@pytest.mark.parametrize("weights", ["none", "random_init"])
def test_lpips_is_an_objective_only_where_evaluation_reports_it(weights):
    """`random_init` trains the perceptual term but is no metric: Optuna must not be offered it."""
    from orchestrator.evaluation.jobs import lpips_metric_weights
    from orchestrator.evaluation.naming import reported_metrics

    cfg = build_config(
        load_space(str(space_path("smoke"))),
        {"tokenizer.loss.lpips_weights": weights, "tokenizer.loss.perceptual_weight": 0.0},
    )
    assert "lpips" not in reported_metrics(cfg)
    assert lpips_metric_weights(cfg) is None
