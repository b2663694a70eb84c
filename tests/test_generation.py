"""Sample generation: per-index randomness, reference decoding, and the Ray driver's guarantees
(bit-identical for any worker count, resumable by chunk, refuses to mix runs)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from orchestrator.config import PRESETS, ConfigError, resolve
from orchestrator.evaluation.generate import (
    CHUNKS,
    MANIFEST,
    PLAN,
    chunk_name,
    generate_samples,
    load_samples,
    sample_grid,
)
from orchestrator.storage.models import autoencoder_kwargs, generator_kwargs
from orchestrator.storage.store import Storage
from workloads.dit import LatentStats, LightningDiT_models
from workloads.generation import class_labels, decode_to_uint8, initial_noise
from workloads.vavae import AutoencoderKL

NUM_SAMPLES, CHUNK = 64, 16


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------
def test_noise_rows_depend_on_seed_and_index_only():
    shape = (4, 8, 8)
    whole = initial_noise(range(10), shape, seed=5)
    pieces = torch.cat(
        [initial_noise(range(0, 3), shape, 5), initial_noise(range(3, 10), shape, 5)]
    )
    assert whole.dtype == torch.float32 and whole.shape == (10, *shape)
    assert torch.equal(whole, pieces)
    assert torch.equal(initial_noise([7, 2], shape, 5), whole[[7, 2]])
    assert not torch.equal(initial_noise(range(10), shape, 6), whole)
    # torch's CPU generator would ignore the high 32 bits of such a seed; this scheme does not.
    assert not torch.equal(initial_noise([0], shape, 5 + 2**32), whole[:1])


@pytest.mark.parametrize("num_classes,count", [(10, 64), (10, 57), (7, 100), (1000, 2500)])
def test_balanced_labels_spread_every_prefix_evenly(num_classes, count):
    labels = class_labels(range(count), num_classes, "balanced", seed=1)
    counts = torch.bincount(labels, minlength=num_classes)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == count
    # Labels do not depend on N: a shorter run is a prefix of a longer one.
    assert torch.equal(
        class_labels(range(count // 2), num_classes, "balanced", 1), labels[: count // 2]
    )
    # Shuffled within blocks, not a repeating 0..K-1 pattern.
    assert not torch.equal(labels[:num_classes], torch.arange(num_classes))


@pytest.mark.parametrize("policy", ["uniform", "balanced"])
def test_labels_do_not_depend_on_chunking(policy):
    whole = class_labels(range(50), 10, policy, seed=2)
    pieces = torch.cat(
        [class_labels(range(s, min(s + 16, 50)), 10, policy, 2) for s in range(0, 50, 16)]
    )
    assert whole.dtype == torch.int64
    assert torch.equal(whole, pieces)
    assert torch.equal(class_labels(range(50), 10, policy, 2), whole)
    assert not torch.equal(class_labels(range(50), 10, policy, 3), whole)


def test_uniform_labels_cover_the_classes():
    labels = class_labels(range(2000), 10, "uniform", seed=0)
    counts = torch.bincount(labels, minlength=10)
    assert labels.min() >= 0 and labels.max() < 10
    assert counts.min() > 150  # expected 200 each
    with pytest.raises(ValueError, match="label policy"):
        class_labels(range(3), 10, "stratified", 0)


class PassThrough(nn.Module):
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


def test_decode_matches_the_reference_rounding():
    stats = LatentStats(torch.tensor([0.5, 0.0, 0.0]), torch.tensor([2.0, 1.0, 1.0]))
    # Channel 0 is de-normalised (z * 2 + 0.5) before decoding.
    values = [-1.0, 1.0, 0.0, -0.0039, 0.0039, -2.0, 0.999]
    latents = torch.tensor(values).view(1, 1, 1, -1).expand(1, 3, 1, len(values)).clone()
    latents[:, 0] = (latents[:, 0] - 0.5) / 2.0
    pixels = decode_to_uint8(PassThrough(), latents, stats)
    assert pixels.dtype == torch.uint8 and pixels.shape == (1, 1, len(values), 3)
    # clamp(127.5 x + 128, 0, 255) then truncation: 0.5 -> 0, 255.5 -> 255, 127.50 -> 127.
    expected = torch.tensor([0, 255, 128, 127, 128, 0, 255], dtype=torch.uint8)
    for channel in range(3):
        assert torch.equal(pixels[0, 0, :, channel], expected)


def test_sample_grid_orders_by_label():
    images = np.stack([np.full((2, 3, 3), k, dtype=np.uint8) for k in range(5)])
    grid = np.asarray(sample_grid(images, np.array([3, 1, 2, 1, 0]), nrow=2, padding=1))
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 3)
    order = [grid[1 + r * 3, 1 + c * 4, 0] for r in range(3) for c in range(2)][:5]
    assert order == [4, 1, 3, 2, 0]  # labels 0, 1, 1, 2, 3; ties keep index order


# --------------------------------------------------------------------------------------------
# The Ray driver
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A micro config (8x8x4 latents, 10 classes, CFG on) and random models in safetensors."""
    root = tmp_path_factory.mktemp("generation")
    base = PRESETS["micro"]()
    cfg = resolve(
        replace(
            base,
            sampler=replace(base.sampler, num_steps=4, cfg_scale=2.0, cfg_interval_start=0.2),
            evaluation=replace(
                base.evaluation,
                num_samples=NUM_SAMPLES,
                batch_size=CHUNK,
                seed=3,
                label_policy="balanced",
            ),
            # A share of two actors, so the two-worker run below gets both.
            resources=replace(base.resources, cpus_per_worker=1.0, generator_workers=2),
            storage=str(root / "storage"),
        )
    )
    torch.manual_seed(0)
    dit = LightningDiT_models[cfg.generator.model.name](**generator_kwargs(cfg))
    with torch.no_grad():
        # The DiT init zeroes the adaLN and output layers (velocity 0): make it do something.
        for param in dit.parameters():
            param.add_(0.05 * torch.randn_like(param))
    tokenizer = AutoencoderKL(**autoencoder_kwargs(cfg))
    paths = {"generator": str(root / "ema.safetensors"), "tokenizer": str(root / "vae.safetensors")}
    for model, key in ((dit, "generator"), (tokenizer, "tokenizer")):
        save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, paths[key])
    stats = LatentStats(0.1 * torch.randn(4), 0.5 + torch.rand(4)).to_dict()
    return cfg, Storage.from_uri(cfg.storage), paths, stats


def run(setup, out_rel: str, **kwargs):
    return scored(setup, out_rel, **kwargs).manifest


def scored(setup, out_rel: str, **kwargs):
    cfg, storage, paths, stats = setup
    kwargs = {"cfg": cfg, **kwargs}
    return generate_samples(
        storage=storage,
        out_rel=out_rel,
        generator_weights=paths["generator"],
        tokenizer_weights=paths["tokenizer"],
        latent_stats=stats,
        **kwargs,
    )


@pytest.fixture(scope="module")
def one_and_two_workers(setup, ray_local):
    return run(setup, "one", num_workers=1), run(setup, "two", num_workers=2)


def test_worker_count_does_not_change_a_single_bit(setup, one_and_two_workers):
    """1 or 2 pool actors, or none (`num_workers: 0`, the trial's own process): same bits."""
    _, storage, _, _ = setup
    run(setup, "zero", num_workers=0)
    one_images, one_labels = load_samples(storage, "one")
    assert one_images.shape == (NUM_SAMPLES, 16, 16, 3) and one_images.dtype == np.uint8
    assert one_images.std() > 1.0  # real decoded samples, not a constant
    for other in ("two", "zero"):
        images, labels = load_samples(storage, other)
        assert np.array_equal(one_images, images), other
        assert np.array_equal(one_labels, labels), other
    assert np.array_equal(one_labels, class_labels(range(NUM_SAMPLES), 10, "balanced", 3).numpy())


def test_manifest_records_the_run(setup, one_and_two_workers):
    _, _, paths, _ = setup
    manifest = one_and_two_workers[0]
    plan = manifest.plan
    assert manifest.chunks == [chunk_name(s) for s in range(0, NUM_SAMPLES, CHUNK)]
    assert (manifest.chunks_generated, manifest.chunks_reused) == (4, 0)
    assert max(manifest.class_counts) - min(manifest.class_counts) <= 1
    assert sum(manifest.class_counts) == NUM_SAMPLES
    assert (plan["num_samples"], plan["chunk_size"], plan["seed"]) == (NUM_SAMPLES, CHUNK, 3)
    assert plan["label_policy"] == "balanced" and plan["num_classes"] == 10
    assert plan["sampler"]["cfg_scale"] == 2.0 and plan["sampler"]["num_steps"] == 4
    for key in ("generator", "tokenizer"):
        with open(paths[key], "rb") as handle:
            assert plan[key]["sha256"] == hashlib.sha256(handle.read()).hexdigest()


def test_rerun_generates_only_the_missing_chunks(setup, one_and_two_workers):
    """A killed run left its plan, two chunks and a partial file: only two chunks are computed."""
    _, storage, _, _ = setup
    done = storage.local_path("one")
    partial = storage.local_path("partial")
    (partial / CHUNKS).mkdir(parents=True)
    shutil.copy2(done / PLAN, partial / PLAN)
    kept = [chunk_name(0), chunk_name(2 * CHUNK)]
    for name in kept:
        shutil.copy2(done / CHUNKS / name, partial / CHUNKS / name)
    (partial / CHUNKS / f"{chunk_name(CHUNK)}.tmp-0badf00d").write_bytes(b"half a file")
    before = {name: os.stat(partial / CHUNKS / name).st_mtime_ns for name in kept}

    manifest = run(setup, "partial", num_workers=2)

    assert (manifest.chunks_generated, manifest.chunks_reused) == (2, 2)
    assert sorted(os.listdir(partial / CHUNKS)) == manifest.chunks
    assert {name: os.stat(partial / CHUNKS / name).st_mtime_ns for name in kept} == before
    resumed, reference = load_samples(storage, "partial"), load_samples(storage, "one")
    assert all(np.array_equal(a, b) for a, b in zip(resumed, reference))

    # A finished run is returned as recorded, without generating anything.
    again = run(setup, "partial", num_workers=1)
    assert again == manifest


@pytest.fixture(scope="module")
def proxy_evaluator(tmp_path_factory):
    """A random-init proxy CNN saved as the evaluator stage would save a trained one."""
    import json

    from orchestrator.evaluation.evaluators import PROXY, EvaluatorSpec
    from workloads.metrics.proxy import CONFIG_FILE, WEIGHTS_FILE, ProxyCNN

    folder = tmp_path_factory.mktemp("proxy")
    torch.manual_seed(1)
    save_file(ProxyCNN(num_classes=10, width=8).state_dict(), folder / WEIGHTS_FILE)
    config = {"arch_kwargs": {"num_classes": 10, "width": 8}, "val_accuracy": 0.0}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    identity = {"name": "proxy-cnn", "version": "test", "weights_sha256": "0" * 64}
    return EvaluatorSpec(PROXY, str(folder), identity)


def test_generation_and_scoring_are_one_pass_equal_to_scoring_after(
    setup, one_and_two_workers, proxy_evaluator
):
    """The actors that generate a chunk score it: the features equal the evaluator's on the
    stored samples, in index order, for chunks generated now and chunks an earlier run left."""
    _, storage, _, _ = setup
    images, labels = load_samples(storage, "one")
    expected = {**proxy_evaluator.build()(images), "label": labels}
    # A finished set is scored without generating anything.
    finished = scored(setup, "one", num_workers=2, evaluator=proxy_evaluator)
    assert finished.manifest == one_and_two_workers[0]
    # Half the chunks left by a killed run: those are read back and scored, the rest generated.
    partial = storage.local_path("scored_partial")
    (partial / CHUNKS).mkdir(parents=True)
    shutil.copy2(storage.local_path("one") / PLAN, partial / PLAN)
    for start in (0, 2 * CHUNK):
        name = chunk_name(start)
        shutil.copy2(storage.local_path("one") / CHUNKS / name, partial / CHUNKS / name)
    resumed = scored(setup, "scored_partial", num_workers=1, evaluator=proxy_evaluator)
    assert (resumed.manifest.chunks_generated, resumed.manifest.chunks_reused) == (2, 2)
    for result in (finished, resumed):
        assert set(result.features) == set(expected)
        for name, values in expected.items():
            assert np.array_equal(result.features[name], values), name


def test_a_different_run_is_not_mixed_into_existing_samples(setup, one_and_two_workers):
    cfg, storage, _, _ = setup
    other = replace(cfg, evaluation=replace(cfg.evaluation, seed=4))
    with pytest.raises(ValueError, match=r"another run .*seed"):
        run(setup, "one", cfg=other)
    assert storage.exists("one", MANIFEST)


def test_gpu_required_but_absent_fails_fast(setup, ray_local):
    cfg, _, _, _ = setup
    on_gpu = replace(
        cfg,
        resources=replace(cfg.resources, use_gpu="yes", gpu_wait_s=0),
        # GPU actors (the micro preset scores and encodes in the trial's process).
        cache=replace(cfg.cache, num_actors=None),
        evaluation=replace(cfg.evaluation, num_workers=None),
    )
    with pytest.raises(ConfigError, match="the Ray cluster has no GPU"):
        run(setup, "gpu", cfg=on_gpu)
