"""The latent cache: exact round trip, resume after a real SIGKILL, tokenizer identity, reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from orchestrator.config import PRESETS, ExperimentConfig, resolve, stage_keys
from orchestrator.config.schema import LatentCacheConfig, TokenizerArchConfig
from orchestrator.data import (
    LatentBatchSampler,
    TokenizerMismatchError,
    build_latent_cache,
    ingest,
    latent_stream,
    tokenizer_identity,
)
from orchestrator.data.encoder import encode_moments, stats_noise
from orchestrator.data.images import load_images
from orchestrator.data.shards import ChannelMoments, moment_columns, plan_shards
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage
from workloads.dit.latent_norm import LatentStats
from workloads.vavae import AutoencoderKL

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOLUTION = 32
NUM_IMAGES = 30
ARCH = TokenizerArchConfig(
    embed_dim=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4
)


def write_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        # Odd sizes and aspect ratios, so the crop, and the flip after it, are exercised.
        width, height = 33 + int(rng.integers(0, 40)), 33 + int(rng.integers(0, 40))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = root / "train" / f"class_{i % 3}" / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def cache_config(root: Path, storage: Path, **cache) -> ExperimentConfig:
    base = PRESETS["debug_cpu"]()
    return resolve(
        replace(
            base,
            dataset=replace(
                base.dataset,
                source="folder",
                root=str(root),
                resolution=RESOLUTION,
                num_classes=None,
            ),
            tokenizer=replace(base.tokenizer, arch=ARCH),
            cache=LatentCacheConfig(num_actors=1, **cache),
            resources=replace(base.resources, cpus_per_worker=1.0),
            storage=str(storage),
        )
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    """Images, an ingested index, and a random-init tokenizer exported to safetensors."""
    root = tmp_path_factory.mktemp("images")
    write_images(root)
    storage_dir = tmp_path_factory.mktemp("storage")
    cfg = cache_config(root, storage_dir, rows_per_shard=8, batch_size=4)
    storage = Storage.from_uri(str(storage_dir))
    ingested = ingest(cfg, storage)
    torch.manual_seed(0)
    model = AutoencoderKL(**{**vars(ARCH), "resolution": RESOLUTION}).eval()
    weights = storage_dir / "tokenizer.safetensors"
    save_file(model.state_dict(), str(weights))
    identity = tokenizer_identity(stage_keys(cfg).tokenizer, str(weights))
    return cfg, storage, ingested, model, str(weights), identity


@pytest.fixture(scope="module")
def built(setup):
    cfg, storage, ingested, _, weights, identity = setup
    return build_latent_cache(cfg, storage, ingested, weights, identity)


def read_moments(manifest, name: str) -> np.ndarray:
    """Column `name` of every shard with plain pyarrow, as (N, C, h, w) in ingest-index order."""
    tables = [pq.read_table(uri) for uri in manifest.shard_uris()]
    values = np.concatenate([t.column(name).combine_chunks().to_numpy_ndarray() for t in tables])
    index = np.concatenate([t.column("index").to_numpy() for t in tables])
    return values[np.argsort(index)]


def test_round_trip_gives_the_encoders_moments_for_image_and_flip(setup, built):
    cfg, _, ingested, model, _, identity = setup
    index = pq.read_table(ingested.index_paths["train"])
    paths = index["path"].to_pylist()
    stream = latent_stream(built, identity, seed=0)
    epoch = stream.source.fetch(stream.source.order(0, 0), 0, 0)
    rows = {
        int(index): {k: v[i] for k, v in epoch.items()} for i, index in enumerate(epoch["index"])
    }
    assert sorted(rows) == list(range(len(paths)))
    threads = torch.get_num_threads()
    # The actor ran with one thread (cpus_per_worker=1); the thread count changes the order of
    # the conv reductions, so match it to compare bit for bit.
    torch.set_num_threads(1)
    try:
        # Encode with the shard plan's sub-batches, as the actor did.
        for plan in plan_shards(len(paths), 8, seed=cfg.seed, stats_samples=10_000):
            for start in range(0, len(plan.rows), 4):
                batch_rows = plan.rows[start : start + 4].tolist()
                images = load_images(
                    [paths[i] for i in batch_rows], resolution=RESOLUTION, max_pixels=10**8
                )
                expected = encode_moments(model, torch.from_numpy(images), flip=True)
                for k, row in enumerate(batch_rows):
                    for name, values in expected.items():
                        got = torch.from_numpy(np.array(rows[row][name]))
                        assert torch.equal(got, values[k]), (name, row)
    finally:
        torch.set_num_threads(threads)


def test_the_trials_own_process_writes_the_same_cache(setup, built, tmp_path):
    """`cache.num_actors: 0` encodes in the calling process (no pool): the same shards."""
    cfg, _, ingested, _, weights, identity = setup
    cfg = replace(cfg, cache=replace(cfg.cache, num_actors=0), storage=str(tmp_path))
    here = build_latent_cache(cfg, Storage.from_uri(str(tmp_path)), ingested, weights, identity)
    assert here.stats == built.stats and here.shards == built.shards
    for name in ("mean", "logvar", "mean_flip", "logvar_flip"):
        np.testing.assert_array_equal(read_moments(here, name), read_moments(built, name))


def test_manifest_records_identities_shapes_and_statistics(setup, built):
    cfg, _, ingested, _, weights, identity = setup
    assert built.tokenizer_identity == identity
    assert built.tokenizer["config_hash"] == stage_keys(cfg).tokenizer
    assert identity.endswith(built.tokenizer["checkpoint_sha256"][:16])
    assert built.dataset["identity"] == ingested.dataset_identity
    assert (built.count, built.latent_shape, built.dtype, built.flip) == (
        NUM_IMAGES,
        [4, 16, 16],
        "float32",
        True,
    )
    assert [shard["rows"] for shard in built.shards] == [8, 8, 8, 6]
    # All 30 images feed the statistics (stats_samples >= count): recompute them by hand.
    mean = torch.from_numpy(read_moments(built, "mean")).double()
    std = torch.exp(0.5 * torch.from_numpy(read_moments(built, "logvar")).double())
    noise = torch.stack([stats_noise(cfg.seed, i, (4, 16, 16)) for i in range(NUM_IMAGES)])
    samples = mean + std * noise
    expected = ChannelMoments.of(samples)
    np.testing.assert_allclose(built.stats["mean"], expected.mean, rtol=1e-9)
    np.testing.assert_allclose(built.stats["std"], expected.std(), rtol=1e-9)
    assert built.stats["samples"] == NUM_IMAGES
    on_disk = json.loads(Path(built.cache_dir, "manifest.json").read_text())
    assert on_disk["schema_version"] == 1 and "cache_dir" not in on_disk


def test_shards_are_readable_by_plain_arrow(built):
    table = pq.read_table(built.shard_uris()[0])
    assert str(table.schema.field("mean").type).startswith("extension<arrow.fixed_shape_tensor")
    assert table.column("mean").combine_chunks().to_numpy_ndarray().shape == (8, 4, 16, 16)


def test_rerun_after_completion_does_nothing(setup, built):
    cfg, storage, ingested, _, weights, identity = setup
    shards = [Path(uri) for uri in built.shard_uris()]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in shards]
    assert build_latent_cache(cfg, storage, ingested, weights, identity) == built
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in shards] == before


def test_reader_refuses_a_cache_of_another_tokenizer(setup, built):
    cfg, storage, ingested, _, weights, identity = setup
    other = "0123456789abcdef+sha256:feedfacefeedface"
    with pytest.raises(TokenizerMismatchError) as raised:
        latent_stream(built.cache_dir, other, seed=0)
    assert identity in str(raised.value) and other in str(raised.value)
    with pytest.raises(TokenizerMismatchError):
        build_latent_cache(cfg, storage, ingested, weights, other)


def test_epoch_order_depends_on_seed_and_epoch_only(setup, built):
    _, _, _, _, _, identity = setup
    source = latent_stream(built, identity, seed=3).source
    epochs = [source.fetch(source.order(3, e), 3, e)["index"].tolist() for e in range(2)]
    # Every epoch visits every cached row once, in a new order.
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1]) == list(range(30))
    # Rebuilt (as a resumed driver does), the order of an epoch is the same.
    again = latent_stream(built.cache_dir, identity, seed=3).source
    assert again.fetch(again.order(3, 1), 3, 1)["index"].tolist() == epochs[1]
    # Consecutive positions stay inside one shard: a task reads one or two shards per call.
    shard_of = {}
    for uri_number, uri in enumerate(built.shard_uris()):
        for index in pq.read_table(uri, columns=["index"])["index"].to_pylist():
            shard_of[index] = uri_number
    runs = [shard_of[i] for i in epochs[0]]
    assert sum(a != b for a, b in zip(runs, runs[1:])) == len(built.shards) - 1


def test_sampler_draws_from_the_chosen_moments_and_normalises():
    stats = LatentStats(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]))
    batch = {
        "mean": torch.zeros(64, 2, 2, 2),
        "logvar": torch.full((64, 2, 2, 2), -60.0),  # std ~ 0: z is the chosen mean
        "mean_flip": torch.ones(64, 2, 2, 2),
        "logvar_flip": torch.full((64, 2, 2, 2), -60.0),
        "label": torch.arange(64, dtype=torch.int32),
    }
    sampler = LatentBatchSampler(stats, flip=True)
    z, label = sampler(batch, torch.Generator().manual_seed(0))
    raw = stats.invert(z)
    flipped = raw[:, 0, 0, 0].round()
    assert set(flipped.tolist()) == {0.0, 1.0} and 16 < flipped.sum() < 48
    assert torch.allclose(raw, flipped.view(-1, 1, 1, 1).expand_as(raw), atol=1e-5)
    assert label.dtype == torch.int64
    again, _ = sampler(batch, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    noisy = {**batch, "logvar": torch.zeros(64, 2, 2, 2)}
    z_plain, _ = LatentBatchSampler(stats, flip=False)(noisy, torch.Generator().manual_seed(1))
    assert 0.8 < stats.invert(z_plain).std() < 1.2  # unit std from logvar 0


def test_a_deterministic_cache_samples_its_means_with_per_position_statistics():
    # RAE's cache: means only (no logvar), statistics per (C, H, W) position.
    latents = torch.randn(64, 2, 3, 3) * torch.arange(1, 19).view(1, 2, 3, 3) + 5.0
    moments = ChannelMoments.of(latents[:40], per_position=True).merge(
        ChannelMoments.of(latents[40:], per_position=True)
    )
    assert moments.mean.shape == (2, 3, 3) and moments.count == 64
    np.testing.assert_allclose(moments.mean, latents.double().mean(0).numpy(), atol=1e-9)
    np.testing.assert_allclose(moments.std(), latents.double().std(0).numpy(), atol=1e-9)
    stats = LatentStats(moments.mean, moments.std())
    assert stats.per_position and stats.num_channels == 2
    batch = {"mean": latents, "mean_flip": latents.flip(-1), "label": torch.zeros(64)}
    z, _ = LatentBatchSampler(stats, flip=False)(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(stats.invert(z), latents)  # no noise: z is the mean
    # Every position normalised on its own: mean 0 and std 1 over the batch, per position.
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, 3, 3), atol=1e-5, rtol=0)
    assert moment_columns(flip=True, deterministic=True) == ("mean", "mean_flip")
    with pytest.raises(ValueError, match=r"expected latents \(N, 2x3x3\)"):
        stats.apply(torch.zeros(1, 2, 4, 4))


def test_sampler_reads_bfloat16_bit_patterns():
    values = torch.randn(4, 2, 2, 2).to(torch.bfloat16)
    batch = {
        "mean": values.view(torch.uint16),
        "logvar": torch.full((4, 2, 2, 2), -60.0).to(torch.bfloat16).view(torch.uint16),
        "label": torch.zeros(4, dtype=torch.int64),
    }
    stats = LatentStats(torch.zeros(2), torch.ones(2))
    z, _ = LatentBatchSampler(stats, flip=False)(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, values.float(), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Resume after a real kill
# --------------------------------------------------------------------------------------------
BUILD_SCRIPT = """
import json, sys
import ray
from orchestrator.config import from_dict, ExperimentConfig
from orchestrator.data import IngestResult, build_latent_cache
from orchestrator.storage.store import Storage

args = json.loads(sys.argv[1])
ray.init(address=args["address"], log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
cfg = from_dict(ExperimentConfig, args["cfg"])
build_latent_cache(cfg, Storage.from_uri(cfg.storage), IngestResult.from_dict(args["ingested"]),
                   args["weights"], args["identity"])
"""


def test_killed_build_resumes_keeping_finished_shards(setup, ray_local):
    from orchestrator.config import to_dict

    cfg, storage, ingested, _, weights, identity = setup
    # One image per shard (another cache key): many shards, so the kill lands mid-build.
    cfg = replace(cfg, cache=replace(cfg.cache, rows_per_shard=1, batch_size=1))
    cache_dir = Path(storage.path(Artifacts.cache(stage_keys(cfg).cache)))
    args = {
        "address": ray_local.get_runtime_context().gcs_address,
        "cfg": to_dict(cfg),
        "ingested": ingested.to_dict(),
        "weights": weights,
        "identity": identity,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, json.dumps(args)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not list(cache_dir.glob("shard-*.parquet")):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no shard appeared within 120 s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    survivors = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache_dir.glob("shard-*.parquet")
    }
    assert 0 < len(survivors) < NUM_IMAGES, "the kill must land mid-build"
    assert not (cache_dir / "DONE.json").exists()

    manifest = build_latent_cache(cfg, storage, ingested, weights, identity)
    for name, stamp in survivors.items():
        path = cache_dir / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{name} was rewritten"
    rows = [row for uri in manifest.shard_uris() for row in pq.read_table(uri).to_pylist()]
    image_ids = [row["image_id"] for row in rows]
    assert sorted(image_ids) == sorted(
        pq.read_table(ingested.index_paths["train"])["image_id"].to_pylist()
    )
    assert len(set(image_ids)) == NUM_IMAGES
    assert all(row["mean_flip"] is not None and row["logvar_flip"] is not None for row in rows)
    assert not [p for p in cache_dir.iterdir() if ".tmp-" in p.name]


def test_a_partial_cache_of_another_tokenizer_is_not_resumed(tmp_path):
    from orchestrator.data.cache import BUILD_CLAIM, _claim_for_tokenizer

    storage = Storage.from_uri(str(tmp_path))
    shard = tmp_path / "caches" / "key" / "shard-00000.parquet"
    _claim_for_tokenizer(storage, "caches/key", "tokenizer-a")
    shard.write_bytes(b"encoded by tokenizer-a")
    _claim_for_tokenizer(storage, "caches/key", "tokenizer-a")  # same tokenizer: resume
    assert shard.exists()
    _claim_for_tokenizer(storage, "caches/key", "tokenizer-b")  # retrained: start over
    assert not shard.exists()
    claim = json.loads((shard.parent / BUILD_CLAIM).read_text())
    assert claim == {"tokenizer_identity": "tokenizer-b"}


def test_latent_norm_false_only_applies_the_multiplier(built):
    """`generator.latent_norm: false` with a multiplier (SD-VAE / DiT's 0.18215): no mean/std."""
    z = torch.randn(2, 4, 16, 16)
    plain = built.latent_stats(0.18215, normalise=False)
    assert torch.allclose(plain.apply(z), z * 0.18215)
    assert torch.allclose(plain.invert(plain.apply(z)), z, atol=1e-6)
    normalised = built.latent_stats(0.18215)
    expected = (z - torch.tensor(built.stats["mean"]).view(1, 4, 1, 1).float()) / torch.tensor(
        built.stats["std"]
    ).view(1, 4, 1, 1).float()
    assert torch.allclose(normalised.apply(z), expected * 0.18215, atol=1e-5)
