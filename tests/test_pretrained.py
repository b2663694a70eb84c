"""Checkpoints from outside: released layouts read strictly, checked against the config, keyed by
content, refused with one line when they do not fit, and a micro sweep built from them.

The released files cannot be downloaded here, so every file is synthetic: the exact key layout
of the reference schemas (`../shared/reference/*_schema.json`) at tiny widths, which change
shapes and never names (each test checks that its tiny model has the schema's keys).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_sweep
from safetensors.torch import load_file, save_file

from orchestrator.config import PRESETS, ConfigError, expand, resolve, stage_keys
from orchestrator.storage.models import autoencoder_kwargs, generator_kwargs
from workloads.dit import LightningDiT_models
from workloads.vavae import VAVAE, AutoencoderKL
from workloads.vavae.checkpoint import diffusers_key_to_ldm, read_tokenizer_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("LDM_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
needs_reference = pytest.mark.skipif(
    not REFERENCE_DIR.is_dir(), reason=f"reference data folder {REFERENCE_DIR} absent"
)


def schema(name: str) -> dict:
    return json.loads((REFERENCE_DIR / name).read_text())


def schema_keys(entries: list[dict]) -> list[str]:
    return [e["key"] for e in entries]


def micro_cfg(**tokenizer):
    cfg = PRESETS["micro"]()
    return resolve(replace(cfg, tokenizer=replace(cfg.tokenizer, **tokenizer)))


def random_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def released_vavae_file(path: Path, cfg, seed: int = 0, vavae: VAVAE | None = None) -> dict:
    """The released VA-VAE `.pt`: a Lightning `state_dict` with the inference keys and the
    training-only groups of the schema (projection, DINOv2, LPIPS, discriminator, logvar).
    With `vavae`, its projection, discriminator and logvar are the file's (else small stubs)."""
    if vavae is not None:
        state = random_state(vavae, seed)
    else:
        state = random_state(AutoencoderKL(**autoencoder_kwargs(cfg)), seed)
        state["linear_proj.weight"] = torch.randn(16, cfg.tokenizer.arch.embed_dim, 1, 1)
        state["loss.logvar"] = torch.zeros(())
    frozen = {
        "foundation_model.model.cls_token": torch.randn(1, 1, 8),
        "foundation_model.model.blocks.0.attn.qkv.weight": torch.randn(24, 8),
        "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1),
    }
    torch.save({"state_dict": {**state, **frozen}, "epoch": 130, "global_step": 1}, path)
    return state


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------
@needs_reference
def test_tiny_models_have_the_released_key_layouts():
    """Tiny widths keep every key name of the released layouts (shapes alone shrink)."""
    with torch.device("meta"):
        vavae = AutoencoderKL(ch=32)
        sdvae = AutoencoderKL(ch=32, embed_dim=4, ch_mult=(1, 2, 4, 4), attn_resolutions=())
        mar = AutoencoderKL(ch=32, embed_dim=16, decoder_attn_resolutions=())
    assert list(vavae.state_dict()) == schema_keys(
        schema("vavae_f16d32_schema.json")["inference_model"]["state_dict"]
    )
    assert list(sdvae.state_dict()) == schema_keys(
        schema("sdvae_f8d4_ldm_schema.json")["model"]["state_dict"]
    )
    assert list(mar.state_dict()) == schema_keys(
        schema("marvae_kl16_schema.json")["model"]["state_dict"]
    )


@needs_reference
def test_each_released_layout_is_detected_and_loads_strictly(tmp_path):
    ldm_entries = schema("sdvae_f8d4_ldm_schema.json")["model"]["state_dict"]
    diffusers_entries = schema("sdvae_f8d4_diffusers_schema.json")["model"]["state_dict"]
    sd_kwargs = dict(ch=32, embed_dim=4, ch_mult=(1, 2, 4, 4), attn_resolutions=(), resolution=64)
    sdvae = AutoencoderKL(**sd_kwargs)
    weights = random_state(sdvae, 1)

    # SD-VAE, LDM keys: a Lightning .ckpt with a stray loss.* key, and a bare .safetensors.
    torch.save({"state_dict": {**weights, "loss.logvar": torch.zeros(())}}, tmp_path / "sd.ckpt")
    save_file(weights, tmp_path / "sd.safetensors")
    # SD-VAE, diffusers keys: every schema key, filled from the LDM tensor it is renamed to.
    ldm_of = {e["key"]: diffusers_key_to_ldm(e["key"], 4) for e in diffusers_entries}
    assert sorted(ldm_of.values()) == sorted(schema_keys(ldm_entries))
    diffusers = {
        key: weights[name].reshape(weights[name].shape[:2])
        if ".attn_1." in name and name.endswith(".weight")
        else weights[name]
        for key, name in ldm_of.items()
    }
    save_file(diffusers, tmp_path / "diffusion_pytorch_model.safetensors")
    # MAR KL-16: weights under `model`, no decoder attention outside the mid block.
    mar = AutoencoderKL(ch=32, embed_dim=16, decoder_attn_resolutions=(), resolution=256)
    mar_weights = random_state(mar, 2)
    torch.save({"model": mar_weights}, tmp_path / "kl16.ckpt")

    for name, layout, model, expected in (
        ("sd.ckpt", "ldm", sdvae, weights),
        ("sd.safetensors", "ldm", sdvae, weights),
        ("diffusion_pytorch_model.safetensors", "diffusers", sdvae, weights),
        ("kl16.ckpt", "mar", mar, mar_weights),
    ):
        checkpoint = read_tokenizer_checkpoint((tmp_path / name).read_bytes(), name)
        assert checkpoint.layout == layout, name
        fresh = type(model)(**model.config)
        fresh.load_state_dict(checkpoint.inference(), strict=True)
        for key, value in expected.items():
            assert torch.equal(fresh.state_dict()[key], value), (name, key)


def test_released_vavae_layout_keeps_every_group_and_loads_the_autoencoder(tmp_path):
    cfg = micro_cfg()
    state = released_vavae_file(tmp_path / "vavae.pt", cfg)
    checkpoint = read_tokenizer_checkpoint((tmp_path / "vavae.pt").read_bytes(), "vavae.pt")
    assert checkpoint.layout == "vavae"
    model = AutoencoderKL(**autoencoder_kwargs(cfg))
    model.load_state_dict(checkpoint.inference(), strict=True)
    assert set(checkpoint.inference()) == set(model.state_dict())
    assert {"linear_proj.weight", "loss.logvar"} <= set(state) <= set(checkpoint.tensors)
    assert "foundation_model.model.cls_token" in checkpoint.tensors


# --------------------------------------------------------------------------------------------
# Stage keys
# --------------------------------------------------------------------------------------------
def test_pretrained_stage_keys_hash_the_content_not_the_path(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "moved" / "a.pt"
    b.parent.mkdir()
    released_vavae_file(a, micro_cfg())
    b.write_bytes(a.read_bytes())
    key_a = stage_keys(micro_cfg(pretrained=str(a))).tokenizer
    assert stage_keys(micro_cfg(pretrained=str(b))).tokenizer == key_a
    # Training settings and the seed shape nothing here; the file's content does.
    cfg = micro_cfg(pretrained=str(a))
    assert stage_keys(replace(cfg, seed=7)).tokenizer == key_a
    released_vavae_file(b, micro_cfg(), seed=1)
    assert stage_keys(micro_cfg(pretrained=str(b))).tokenizer != key_a
    # init_from enters a trained tokenizer's key by content too; absent, keys are unchanged.
    plain = stage_keys(micro_cfg()).tokenizer
    assert stage_keys(micro_cfg(init_from=str(a))).tokenizer not in (plain, key_a)


# --------------------------------------------------------------------------------------------
# init_from and proj_fix in the tokenizer workload
# --------------------------------------------------------------------------------------------
def test_init_from_loads_a_released_file_and_proj_fix_freezes_the_projection(tmp_path):
    from orchestrator.train.plan import StagePlan
    from orchestrator.train.tokenizer import TokenizerWorkload

    released = tmp_path / "vavae.pt"
    base = micro_cfg(init_from=str(released))
    vf = replace(base.tokenizer.vf, proj_fix=True)
    cfg = replace(base, tokenizer=replace(base.tokenizer, vf=vf))
    workload = TokenizerWorkload(cfg, (StagePlan("main", 8),), {}, torch.device("cpu"))
    state = released_vavae_file(released, cfg, vavae=workload.new_vavae())
    bundle = workload.build(0, None)
    vavae = bundle.model.vavae
    for key, value in state.items():
        assert torch.equal(vavae.state_dict()[key], value), key
    # proj_fix: the projection is a buffer (kept in checkpoints), outside every param group.
    assert "linear_proj.weight" in dict(vavae.named_buffers())
    trained = {id(p) for group in bundle.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in vavae.encoder.parameters())
    assert len(trained) == sum(1 for _ in vavae.parameters())


def test_init_from_refuses_a_projection_of_another_width(tmp_path):
    released = tmp_path / "vavae.pt"
    released_vavae_file(released, micro_cfg())  # a 16-wide projection
    model = VAVAE(vf_feature_dim=32, **autoencoder_kwargs(micro_cfg()))
    tensors = read_tokenizer_checkpoint(released.read_bytes(), "vavae.pt").tensors
    with pytest.raises(ValueError, match="linear_proj.weight"):
        model.load_initial_weights(tensors, "vavae.pt")
    # Without a projection in the file, the fresh one stays; the autoencoder still loads.
    tensors = {k: v for k, v in tensors.items() if not k.startswith("linear_proj.")}
    assert model.load_initial_weights(tensors, "vavae.pt") == ["autoencoder", "loss.logvar"]


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# --------------------------------------------------------------------------------------------
def released_dit_file(path: Path, cfg, in_channels: int | None = None, seed: int = 0) -> dict:
    """The released LightningDiT `.pt` layout (train.py): `model`, `ema`, `opt`, `config`."""
    kwargs = generator_kwargs(cfg)
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    model = LightningDiT_models[cfg.generator.model.name](**kwargs)
    ema = random_state(model, seed)
    opt = {"state": {}, "param_groups": [{"lr": 2e-4, "params": []}]}
    torch.save({"model": ema, "ema": ema, "opt": opt, "config": {"epochs": 800}}, path)
    return ema


def latent_stats_file(path: Path, channels: int) -> None:
    """The reference's `latents_stats.pt`: {mean, std}, each (1, C, 1, 1)."""
    torch.save(
        {"mean": torch.randn(1, channels, 1, 1), "std": torch.rand(1, channels, 1, 1) + 0.5}, path
    )


def write_space(path: Path, base: dict, grid: dict | None = None) -> Path:
    data = {"name": path.stem, "preset": "micro", "base": base}
    if grid:
        data["search"] = {"grid": grid}
    path.write_text(yaml.safe_dump(data))
    return path


def bad_input(tmp_path, capsys, base: dict) -> str:
    """Run the CLI (no dry run) on a micro space; it must stop with exit 2 and one line, having
    written nothing."""
    from orchestrator.frontier import EXIT_USER_ERROR, main

    storage = tmp_path / "store"
    space = write_space(tmp_path / "bad.yaml", base)
    assert main(["--space", str(space), "--storage", str(storage)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not storage.exists()
    return err


def test_bad_pretrained_inputs_stop_with_one_line_and_write_nothing(tmp_path, capsys):
    cfg = micro_cfg()
    good_tok = tmp_path / "vavae.pt"
    released_vavae_file(good_tok, cfg)
    # A truncated checkpoint.
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good_tok.read_bytes()[: good_tok.stat().st_size // 2])
    err = bad_input(tmp_path, capsys, {"tokenizer": {"pretrained": str(truncated)}})
    assert "tokenizer.pretrained" in err and "truncated" in err
    # A file of another architecture (SD-VAE f8d4 for the f2 micro tokenizer): names <= 5 keys.
    sd = AutoencoderKL(ch=32, embed_dim=4, ch_mult=(1, 2, 4, 4), attn_resolutions=())
    save_file(random_state(sd), tmp_path / "sdvae.safetensors")
    err = bad_input(
        tmp_path, capsys, {"tokenizer": {"pretrained": str(tmp_path / "sdvae.safetensors")}}
    )
    assert "another architecture" in err and "ch_mult (1, 2, 4, 4)" in err
    named = err.split("mis-shaped: ", 1)[1].split("; ")
    assert 1 <= len(named) <= 5 and named[0].startswith(("missing ", "unexpected ")), err
    # A generator whose in_channels differ from the tokenizer's latent channels.
    dit = tmp_path / "gen" / "lightningdit.pt"
    dit.parent.mkdir()
    released_dit_file(dit, cfg, in_channels=8)
    latent_stats_file(dit.parent / "latents_stats.pt", 4)
    base = {"tokenizer": {"pretrained": str(good_tok)}, "generator": {"pretrained": str(dit)}}
    err = bad_input(tmp_path, capsys, base)
    assert "generator.pretrained" in err and "in_channels" in err and "4 channels" in err
    # latents_stats.pt with the wrong channel count.
    released_dit_file(dit, cfg)
    latent_stats_file(dit.parent / "latents_stats.pt", 8)
    err = bad_input(tmp_path, capsys, base)
    assert "generator.pretrained_latent_stats" in err and "8 channels" in err
    # init_from: a missing file, and a checkpoint of another architecture.
    err = bad_input(tmp_path, capsys, {"tokenizer": {"init_from": str(tmp_path / "none.pt")}})
    assert "tokenizer.init_from" in err and "none.pt" in err
    err = bad_input(
        tmp_path, capsys, {"tokenizer": {"init_from": str(tmp_path / "sdvae.safetensors")}}
    )
    assert "tokenizer.init_from" in err and "another architecture" in err


def test_dry_run_of_the_shipped_spaces_prints_pretrained(capsys):
    from orchestrator.frontier import main

    for space, points in (("released", 1), ("reference_tokenizers", 3)):
        assert main(["--space", space, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"{points} point" in out, out
        rows = [line for line in out.splitlines() if re.match(r"\d+  ", line)]
        assert len(rows) == points and all(" pretrained " in row for row in rows), out
        # No file is here: the plan says so instead of failing (a run would stop with exit 2).
        assert "NOT READABLE HERE" in out


# --------------------------------------------------------------------------------------------
# End to end: a micro sweep with a pretrained tokenizer and a pretrained generator point
# --------------------------------------------------------------------------------------------
def test_micro_sweep_with_pretrained_tokenizer_and_generator(tmp_path):
    from orchestrator.config import load_sweep

    cfg = micro_cfg()
    tokenizer_file = tmp_path / "vavae.pt"
    inference = released_vavae_file(tokenizer_file, cfg)
    dit = tmp_path / "gen" / "lightningdit-micro.pt"
    dit.parent.mkdir()
    ema = released_dit_file(dit, cfg)
    latent_stats_file(dit.parent / "latents_stats.pt", 4)
    storage = tmp_path / "store"
    space = write_space(
        tmp_path / "pretrained_micro.yaml",
        # No VF settings apply to a pretrained tokenizer; `none` also skips the stand-in ViT.
        {"tokenizer": {"pretrained": str(tokenizer_file), "vf": {"foundation": "none"}}},
        {"generator.pretrained": [None, str(dit)]},
    )
    run_sweep(space, storage, trials=2)

    trained, imported = expand(load_sweep(space), {"storage": str(storage)})
    assert trained.keys.tokenizer == imported.keys.tokenizer
    tok_done = json.loads(
        (storage / "tokenizers" / trained.keys.tokenizer / "DONE.json").read_text()
    )
    assert tok_done["pretrained"]["layout"] == "vavae" and tok_done["steps"] == 0
    exported = load_file(
        storage / "tokenizers" / trained.keys.tokenizer / "export/model.safetensors"
    )
    assert exported.keys() == {k for k in inference if not k.startswith(("linear_proj", "loss."))}
    assert all(torch.equal(exported[k], inference[k]) for k in exported)
    # Only the trained generator needed a latent cache and a Train run.
    assert [p.name for p in (storage / "caches").iterdir()] == [trained.keys.cache]
    gen_dir = storage / "generators" / imported.keys.generator
    assert not (gen_dir / "checkpoint_manager_snapshot.json").exists()
    weights = load_file(gen_dir / "export" / "ema.safetensors")
    assert all(torch.equal(weights[k], ema[k]) for k in ema)
    for point in (trained, imported):
        summary = json.loads(
            (storage / "generator_eval" / point.keys.generator_eval / "DONE.json").read_text()
        )
        assert summary["metrics"]["fd_proxy_40"] > 0 and summary["num_samples"] == 40
    # On the chart, the points are named by their files, not by VF settings they never had.
    header = (storage / "sweeps" / "pretrained_micro" / "frontier.csv").read_text().splitlines()[0]
    assert "pretrained" in header and "generator" in header and ",vf," not in header


def test_reference_tokenizer_points_accept_their_own_layout_only(tmp_path):
    """The three points of reference_tokenizers.yaml (at a tiny width): each accepts its file's
    layout and refuses another tokenizer's."""
    from orchestrator.storage.pretrained import check_inputs
    from search_spaces import load_space

    points = expand(load_space("reference_tokenizers"), {"tokenizer.arch.ch": 32})
    sd, mar, vavae = (p.config for p in points)
    sd_weights = random_state(AutoencoderKL(**autoencoder_kwargs(sd)), 0)
    torch.save({"state_dict": sd_weights}, tmp_path / "sd.ckpt")
    torch.save(
        {"model": random_state(AutoencoderKL(**autoencoder_kwargs(mar)), 1)}, tmp_path / "kl16.ckpt"
    )
    released_vavae_file(tmp_path / "vavae.pt", vavae)
    files = {"sd.ckpt": sd, "kl16.ckpt": mar, "vavae.pt": vavae}
    for name, cfg in files.items():
        for other in files:
            pointed = replace(
                cfg, tokenizer=replace(cfg.tokenizer, pretrained=str(tmp_path / other))
            )
            if other == name:
                check_inputs([pointed])
            else:
                # Another width is named first (its latent channels), else the architecture.
                refusal = rf"{other} (makes \d+-channel latents but|.* is another architecture)"
                with pytest.raises(ConfigError, match=refusal):
                    check_inputs([pointed])
