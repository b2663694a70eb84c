"""One point per tokenizer family, end to end on the embedded data, as a user runs a sweep.

VA-VAE (the `vavae` family; its LDM point, `vf.foundation: none`, is test_sweep.py's), EQ-VAE,
l-DeTok (with its decoder-only stage), REPA-E and RAE (its frozen stand-in
encoder, a ViT decoder, the DDT head with the dimension-dependent shift, and `cache.mode:
on_the_fly`) each train a tokenizer, are evaluated, give latents to a generator that trains and
is scored by the same evaluator, and land on one frontier table. The CLI runs in a subprocess
(its own local Ray); MLflow is its default SQLite store under the sweep's storage. The micro
preset runs the small path (rows fetched in the Train workers, no evaluation or cache pools):
the cluster tests run each family again on streams and pools.
"""

from __future__ import annotations

import csv
import json
import math

from conftest import run_sweep

SPACE = """\
name: families
preset: micro
search:
  algorithm: grid
  points:
    - {tokenizer.vf.foundation: standin}
    - {tokenizer.family: eqvae, tokenizer.vf.foundation: none}
    - tokenizer.family: detok
      tokenizer.vf.foundation: none
      tokenizer.stages: [{name: denoise, steps: 6}, {name: decoder, steps: 2, train: decoder}]
    - {tokenizer.family: repae, tokenizer.vf.foundation: standin}
    - tokenizer.family: rae
      tokenizer.vf.foundation: standin
      tokenizer.arch.embed_dim: 96
      tokenizer.decoder: {patch_size: 2, width: 32, depth: 1, heads: 2, mlp_dim: 64}
      generator.model.head: {depth: 1, width: 32, heads: 2}
      generator.training.time_shift: auto
      cache.mode: on_the_fly
"""


def test_one_point_per_family_runs_end_to_end(tmp_path):
    space, storage = tmp_path / "families.yaml", tmp_path / "store"
    space.write_text(SPACE)
    run_sweep(space, storage, trials=5)

    with open(storage / "sweeps" / "families" / "frontier.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    for row in rows:  # every family reconstructed and generated, scored by one evaluator
        for metric in ("psnr", "rfd_proxy_40", "fd_proxy_40"):
            assert math.isfinite(float(row[metric])), (row["label"], metric)
    labels = [row["label"] for row in rows]
    for family in ("eqvae", "detok", "repae", "rae"):
        assert sum(label.startswith(family) for label in labels) == 1, labels

    # RAE's cache: statistics only (on the fly), the latent itself (no logvar), per position.
    manifests = [json.loads(p.read_text()) for p in storage.glob("caches/*/manifest.json")]
    assert len(manifests) == 5
    rae = [m for m in manifests if m["latent_shape"] == [96, 8, 8]]
    assert len(rae) == 1
    assert rae[0]["columns"] == ["index", "image_id", "label", "mean", "mean_flip"]
    assert len(rae[0]["stats"]["mean"]) == 96 and len(rae[0]["stats"]["mean"][0]) == 8
    vae = [m for m in manifests if m is not rae[0]]
    assert all("logvar" in m["columns"] and len(m["stats"]["mean"]) == 4 for m in vae)
