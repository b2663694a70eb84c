"""The typed config: YAML round trip, hash stability, validation errors, the CLI's exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import replace
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
from orchestrator.config.loading import parse_yaml
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
    "unknown_timm_name": (
        "tokenizer: {vf: {foundation: vit_larg_patch14_dinov2.lvd142m}}",
        r"tokenizer\.vf\.foundation: 'vit_larg_patch14_dinov2\.lvd142m' is neither a preset nor a "
        r"timm model name \(did you mean `vit_large_patch14_dinov2\.lvd142m`\?\)",
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


FLOW_OFF = {"generator.transport.use_lognorm": False, "generator.transport.use_cosine_loss": False}
BAD_OBJECTIVES = {
    "ddpm_with_an_ode_sampler": (
        {"generator.objective": "ddpm", **FLOW_OFF},
        r"sampler\.method: generator\.objective: ddpm needs sampler\.method: ddpm, got 'euler'",
    ),
    "ddpm_with_flow_keys": (
        {"generator.objective": "ddpm", "sampler.method": "ddpm"},
        r"generator\.transport\.use_lognorm: is a rectified-flow setting",
    ),
    "ddpm_with_a_shifted_grid": (
        {"generator.objective": "ddpm", "sampler.method": "ddpm", **FLOW_OFF},
        r"sampler\.timestep_shift: must be 0 with sampler\.method: ddpm",
    ),
    "ddpm_sampler_for_flow": (
        {"sampler.method": "ddpm"},
        r"sampler\.method: `ddpm` samples generator\.objective: ddpm",
    ),
    "learned_sigma_for_flow": (
        {"generator.model.learn_sigma": True},
        r"generator\.model\.learn_sigma: a learned variance needs generator\.objective: ddpm",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OBJECTIVES))
def test_objective_and_sampler_must_match(case):
    overrides, pattern = BAD_OBJECTIVES[case]
    with pytest.raises(ConfigError, match=pattern):
        build_config(load_space("smoke"), overrides)


def test_duplicate_key_exits_2_naming_the_key_and_both_lines(tmp_path):
    space = tmp_path / "dup.yaml"
    space.write_text(
        textwrap.dedent("""\
        name: dup
        preset: debug_cpu
        base:
          tokenizer:
            vf:
              cos_margin: 0.5
              vf_weight: 0.1
              cos_margin: 0.3
        """)
    )
    result = run_cli("--dry-run", "--space", str(space))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {space}: duplicate key `cos_margin` at lines 6 and 8"
    bad_set = run_cli("--dry-run", "--set", "tokenizer.vf={vf_weight: 0.1, vf_weight: 0.2}")
    assert bad_set.returncode == 2
    assert "--set tokenizer.vf: duplicate key `vf_weight`" in bad_set.stderr.strip()


def test_strict_yaml_keeps_merge_keys_and_repeated_keys_in_sibling_mappings():
    text = "a: &x {k: 1}\nb: {<<: *x, j: 2}\nc: {<<: *x, k: 3}\n"
    assert parse_yaml(text, "t") == {"a": {"k": 1}, "b": {"k": 1, "j": 2}, "c": {"k": 3}}
    with pytest.raises(ConfigError, match=r"^t: duplicate key `1` at lines 2 and 3$"):
        parse_yaml("x:\n  1: a\n  1: b\n", "t")


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
        r"search\.optuna\.metrics: `rfid` is not a metric this config reports.*rfd_proxy_500",
    ),
    "unknown_metric": (
        "{algorithm: optuna, optuna: {metrics: [gfid], modes: [min], space: "
        "{tokenizer.vf.vf_weight: {type: uniform, low: 0.01, high: 1.0}}}}",
        r"search\.optuna\.metrics: `gfid` is not a known metric",
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


@pytest.mark.parametrize(
    ("axes", "pattern"),
    [
        ("{x: psnr, y: sharpness}", r"frontier\.y: `sharpness` is not a known metric"),
        ("{x: rfid, y: auto}", r"frontier\.x: `rfid` is not a metric this config reports"),
        ("{x: rfd_proxy_400, y: auto}", r"frontier\.x: `rfd_proxy_400` is not a metric"),
    ],
)
def test_frontier_axes_name_reported_metrics(tmp_path, axes, pattern):
    space = tmp_path / "axes.yaml"
    space.write_text(f"name: s\npreset: debug_cpu\nfrontier: {axes}\n")
    with pytest.raises(ConfigError, match=pattern):
        load_sweep(space)
    space.write_text("name: s\npreset: debug_cpu\nfrontier: {x: rfd_proxy, y: fd_proxy_500}\n")
    load_sweep(space)


def test_optuna_objectives_may_omit_the_count(tmp_path):
    from orchestrator.evaluation.naming import resolve_metric

    space = tmp_path / "opt.yaml"
    space.write_text(
        "name: s\npreset: debug_cpu\nsearch: {algorithm: optuna, optuna: {metrics: [rfd_proxy, "
        "fd_proxy_500], modes: [min, min], space: {tokenizer.vf.vf_weight: {type: uniform, "
        "low: 0.01, high: 1.0}}}}\n"
    )
    sweep = load_sweep(space)
    base = build_config(sweep, {})
    assert [resolve_metric(m, base) for m in sweep.search.optuna.metrics] == [
        "rfd_proxy_500",
        "fd_proxy_500",
    ]


def test_dry_run_names_every_metric_with_its_sample_count():
    result = run_cli("--dry-run", "--space", "paper_table2")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("metrics"))
    assert line == (
        "metrics (every point): rfid_50k, psnr, ssim, lpips, fid_10k, sfid_10k, is_10k, "
        "precision_10k, recall_10k, density_cv, gini, norm_entropy, ifid_50k, lnc_10k, lds"
    )
    # The cost plan follows the table (tests/test_cost.py checks its arithmetic).
    assert "cost plan at 400 TFLOP/s per GPU" in result.stdout
    assert "with search.prune: {keep: 3}: at least" in result.stdout


def test_a_bad_reference_batch_exits_2_with_one_line(tmp_path):
    np = pytest.importorskip("numpy")
    batch = tmp_path / "VIRTUAL_small.npz"
    arrays = {"mu": np.zeros(4), "sigma": np.eye(4), "mu_s": np.zeros(2), "sigma_s": np.eye(2)}
    np.savez(batch, arr_0=np.zeros((5, 8, 8, 3), np.uint8), **arrays)
    result = run_cli(
        "--dry-run",
        "--space",
        "paper_table2",
        "--set",
        f"evaluation.reference_stats={batch}",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert (
        f"evaluation.reference_stats: {batch}: arr_0 holds 5 images, fewer than the 10,000"
        in (lines[0])
    )


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


# The paper's tables as sweep files: points, tokenizers, caches, generators in the dry-run plan.
PAPER_SPACES = {
    "paper_table1": (9, 1, 1, 9),
    "paper_table1_vavae": (1, 1, 1, 1),
    "paper_table2_lxl": (18, 9, 9, 18),
    "paper_table4": (5, 5, 5, 5),
    "paper_table5": (5, 5, 5, 5),
    "paper_release_800": (1, 1, 1, 1),
}


@pytest.mark.parametrize("name", sorted(PAPER_SPACES))
def test_dry_run_plans_every_paper_space(name):
    points, tokenizers, caches, generators = PAPER_SPACES[name]
    result = run_cli("--dry-run", "--space", name)
    assert result.returncode == 0, result.stderr
    assert (
        f"{points} points: {tokenizers} tokenizers, {caches} latent caches, "
        f"{generators} generators" in result.stdout
    )
    # Every file's header states the paper's numbers and the protocol it follows.
    header = space_path(name).read_text().split("\nname:")[0]
    assert re.search(r"FID-(10|50)K", header) and re.search(r"\d+\.\d\d", header)


def test_table1_ladder_varies_generator_keys_only_on_one_f8d4_tokenizer():
    points = expand(load_space("paper_table1"))
    first, last = points[0].config, points[-1].config
    assert {p.keys.tokenizer for p in points} == {points[0].keys.tokenizer}
    assert {p.keys.cache for p in points} == {points[0].keys.cache}
    assert len({p.keys.generator for p in points}) == 9
    assert {p.config.tokenizer for p in points} == {first.tokenizer}
    assert (first.tokenizer.arch.downsample_factor, first.tokenizer.arch.embed_dim) == (8, 4)
    assert {
        (p.config.generator.latent_norm, p.config.generator.latent_multiplier) for p in points
    } == {(False, 0.18215)}
    # Rung 0: DiT-XL/2 as DiT trains and samples it; rung 1 swaps in rectified flow only.
    assert (first.generator.objective, first.generator.model.learn_sigma) == ("ddpm", True)
    assert (first.sampler.method, first.sampler.num_steps) == ("ddpm", 250)
    rung1 = points[1].config
    assert (rung1.generator.objective, rung1.sampler.method) == ("rectified_flow", "dopri5")
    # Rung 1: DiT-XL/2's network and optimiser with rectified flow, uniform t, MSE only.
    gen = rung1.generator
    assert (gen.model.name, gen.model.use_swiglu, gen.model.use_rmsnorm, gen.model.use_rope) == (
        "LightningDiT-XL/2",
        False,
        False,
        False,
    )
    assert (gen.transport.use_lognorm, gen.transport.use_cosine_loss) == (False, False)
    assert (gen.training.global_batch_size, gen.training.steps, gen.optimizer.lr) == (
        256,
        400_000,
        1e-4,
    )
    assert gen.optimizer.betas == (0.9, 0.999)
    # Rung 8 is the LightningDiT recipe on DiT's patch 2: the paper preset's generator but for
    # the model name.
    paper = PRESETS["paper"]().generator
    assert (
        replace(last.generator.model, name=paper.model.name, in_channels=None, input_size=None)
        == paper.model
    )
    assert (last.generator.transport, last.generator.optimizer) == (
        paper.transport,
        paper.optimizer,
    )
    assert last.generator.training.steps == 100_000
    # Each rung changes the recipe one step: consecutive generator sections differ.
    sections = [p.config.generator for p in points]
    assert all(a != b for a, b in zip(sections, sections[1:]))
    assert {(p.config.sampler.method, p.config.sampler.cfg_scale) for p in points[1:]} == {
        ("dopri5", 1.0)
    }


def test_paper_spaces_reuse_the_tokenizers_of_table2_and_the_release():
    table2 = {p.keys.tokenizer for p in expand(load_space("paper_table2"))}
    assert {p.keys.tokenizer for p in expand(load_space("paper_table2_lxl"))} == table2
    for name in ("paper_table4", "paper_table5"):
        keys = [p.keys.tokenizer for p in expand(load_space(name))]
        assert len(set(keys)) == 5 and len(set(keys) & table2) == (
            3 if name == "paper_table4" else 2
        )
    (release,) = expand(load_space("paper_release"))
    (long,) = expand(load_space("paper_release_800"))
    assert long.keys.tokenizer == release.keys.tokenizer
    gen, sampler = long.config.generator, long.config.sampler
    assert (gen.training.epochs, gen.transport.uniform_t_after_step) == (800, 600_000)
    assert (sampler.cfg_scale, sampler.cfg_interval_start, sampler.timestep_shift) == (
        6.7,
        0.125,
        0.3,
    )


def test_table5_rows_are_the_papers_loss_variants():
    vf = [p.config.tokenizer.vf for p in expand(load_space("paper_table5"))]
    rows = [
        (v.foundation, v.cos_weight, v.distmat_weight, v.cos_margin, v.distmat_margin, v.vf_weight)
        for v in vf
    ]
    assert rows == [
        ("none", 1.0, 1.0, 0.5, 0.25, 0.1),  # none
        ("dinov2", 1.0, 1.0, 0.5, 0.25, 0.1),  # full
        ("dinov2", 0.0, 1.0, 0.5, 0.25, 0.05),  # -mcos: mdms alone, half weight
        ("dinov2", 1.0, 0.0, 0.5, 0.25, 0.05),  # -mdms: mcos alone, half weight
        ("dinov2", 1.0, 1.0, 0.0, 0.0, 0.1),  # -margin
    ]
