"""Exact resume and resume on another world size (Ray Train V2 + DeepSpeed ZeRO-1/3, CPU, gloo),
through the production readers: the tokenizer on an ingested image folder (`image_stream`,
random crops), the generator on a latent cache in the real shard layout (`latent_stream`).

Run A trains 2N steps without interruption. Run B trains N steps and stops (as a preempted job),
then the same job runs again: Ray Train finds the run by name under the storage, hands the
workers the latest checkpoint, and the driver builds each rank's data from that step on. fp32
on CPU is deterministic, so the losses after step N and the exported weights must be bit-equal.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from orchestrator.data import image_stream, ingest, latent_stream
from orchestrator.data.manifest import SCHEMA_VERSION, CacheManifest
from orchestrator.data.shards import moment_columns, shard_file_name, shard_schema, tensor_column
from orchestrator.storage.store import Storage
from orchestrator.train.callbacks import read_metrics
from orchestrator.train.hooks import DebugHooks

pytestmark = pytest.mark.timeout(900)

N = 3
ROWS = 32
TERMS = {"generator": ("loss", "mse", "cos"), "tokenizer": ("loss",)}
WORKLOADS = {"images": "tokenizer", "latents": "generator"}


def write_image_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(ROWS):
        # Not square: the random crop has room to move.
        width, height = 18 + int(rng.integers(0, 12)), 18 + int(rng.integers(0, 12))
        path = root / "train" / f"class_{i % 4}" / f"img_{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return root


def write_latent_cache(cache_dir: Path, shape: tuple[int, ...]) -> str:
    """A 32-row cache in the shard layout `build_latent_cache` writes (shards of 12, 12, 8)."""
    rng = np.random.default_rng(1)
    cache_dir.mkdir(parents=True)
    schema = shard_schema(shape, "float32", True)
    shards = []
    for shard_id, start in enumerate(range(0, ROWS, 12)):
        rows = list(range(start, min(start + 12, ROWS)))
        moments = {
            name: tensor_column(
                rng.normal(size=(len(rows), *shape)).astype(np.float32)
                if name.startswith("mean")
                else np.full((len(rows), *shape), -2.0, np.float32)
            )
            for name in moment_columns(True)
        }
        table = pa.table(
            {"index": rows, "image_id": [f"img_{i}" for i in rows], "label": [i % 4 for i in rows]}
            | moments,
            schema=schema,
        )
        pq.write_table(table, cache_dir / shard_file_name(shard_id))
        shards.append({"file": shard_file_name(shard_id), "rows": len(rows)})
    manifest = CacheManifest(
        schema_version=SCHEMA_VERSION,
        tokenizer={"identity": "test-tokenizer"},
        dataset={},
        resolution=16,
        latent_shape=list(shape),
        dtype="float32",
        storage_dtype="float32",
        flip=True,
        count=ROWS,
        rows_per_shard=12,
        shards=shards,
        columns=schema.names,
        skipped={},
        stats={},
    )
    (cache_dir / "manifest.json").write_text(json.dumps(manifest.to_dict()))
    return str(cache_dir)


@pytest.fixture(scope="module")
def sources(train_kit, tmp_path_factory):
    """The image tree (ingested once) and the latent cache, shared by every run below."""
    base = tmp_path_factory.mktemp("sources")
    tree = write_image_tree(base / "images")
    cfg = train_kit.config(base / "ingest-storage", zero_stage=1)
    shape = (cfg.generator.model.in_channels, *(2 * [cfg.generator.model.input_size]))
    return {"tree": tree, "cache": write_latent_cache(base / "cache", shape), "ingested": {}}


def _config(train_kit, root: Path, source: str, sources, workers: int = 2):
    # 32 rows, global batch 8 on 2 workers: 4 steps per epoch; the run stops mid-epoch at
    # N = 3 and the resumed half crosses into epoch 1.
    cfg = train_kit.config(root, zero_stage=1, steps=2 * N, checkpoint_every=N, workers=workers)
    if source == "images":
        dataset = replace(cfg.dataset, source="folder", root=str(sources["tree"]), num_classes=4)
        # The image runs stream through a Ray Data pipeline per rank, as ImageNet does; the
        # latent runs fetch their rows in the workers (small data, the default).
        resources = replace(cfg.resources, in_worker_data_mb=0)
        cfg = replace(cfg, dataset=dataset, resources=resources)
    return cfg


def _stream(cfg, source: str, sources):
    if source == "latents":
        return latent_stream(sources["cache"], "test-tokenizer", cfg.seed)
    storage = Storage.from_uri(cfg.storage)
    return image_stream(ingest(cfg, storage), cfg)


def _fit(train_kit, cfg, source, sources, log, hooks=None):
    stream = _stream(cfg, source, sources)
    return train_kit.fit(cfg, WORKLOADS[source], log, hooks, stream=stream)


@pytest.fixture(scope="module")
def stopped_run(request, train_kit, sources, tmp_path_factory):
    """Run B's first half: N steps, then a checkpoint and an early exit (the source, `images`
    or `latents`, is the test's indirect parameter)."""
    source = request.param
    root = tmp_path_factory.mktemp(f"stopped-{source}") / "storage"
    log = root.parent / "metrics.jsonl"
    cfg = _config(train_kit, root, source, sources)
    result = _fit(train_kit, cfg, source, sources, log, DebugHooks(stop_after_step=N))
    assert not result.completed and result.steps == N
    return source, root, read_metrics(log)


def _resume_copy(stopped_run, tmp_path: Path) -> Path:
    _, root, _ = stopped_run
    target = tmp_path / "storage"
    shutil.copytree(root, target)
    return target


# The tokenizer on the image stream here; the generator on the latent cache resumes exactly in
# the ZeRO-3 rounds test below (with its EMA), and across world sizes after this one.
@pytest.mark.parametrize("stopped_run", ["images"], indirect=True)
def test_exact_resume(train_kit, sources, stopped_run, tmp_path):
    source, _, first_half = stopped_run
    full_root = tmp_path / "uninterrupted"
    full_log = tmp_path / "full.jsonl"
    full = _fit(
        train_kit, _config(train_kit, full_root, source, sources), source, sources, full_log
    )
    full_records = read_metrics(full_log)

    root = _resume_copy(stopped_run, tmp_path)
    log = tmp_path / "resumed.jsonl"
    resumed = _fit(train_kit, _config(train_kit, root, source, sources), source, sources, log)
    resumed_records = read_metrics(log)

    assert [r["step"] for r in first_half] == list(range(1, N + 1))
    for before, after in zip(full_records[:N], first_half):
        assert after["loss"] == before["loss"]
    # The second run starts after the checkpoint, not from scratch.
    assert [r["step"] for r in resumed_records] == list(range(N + 1, 2 * N + 1))
    assert resumed.steps == full.steps == 2 * N
    # 4 steps per epoch: steps 1-4 are epoch 0, 5-6 epoch 1 (data epochs, not executions).
    assert [r["epoch"] for r in full_records] == [0, 0, 0, 0, 1, 1]
    for before, after in zip(full_records[N:], resumed_records):
        assert before["epoch"] == after["epoch"]
        for term in TERMS[WORKLOADS[source]]:
            assert after[term] == before[term], (after["step"], term)
    exported = sorted(p.name for p in Path(full.export_dir).glob("*.safetensors"))
    assert exported and exported == sorted(
        p.name for p in Path(resumed.export_dir).glob("*.safetensors")
    )
    for name in exported:
        a = load_file(str(Path(full.export_dir) / name))
        b = load_file(str(Path(resumed.export_dir) / name))
        assert set(a) == set(b)
        assert all(torch.equal(a[key], b[key]) for key in a), name


@pytest.mark.parametrize("stopped_run", ["latents"], indirect=True)
def test_resume_on_another_world_size(train_kit, sources, stopped_run, tmp_path):
    """2 workers stopped at N, 1 worker finishes: consolidated weights + EMA + step carry over.
    One workload is enough for the re-sharding path."""
    source = stopped_run[0]
    root = _resume_copy(stopped_run, tmp_path)
    log = tmp_path / "resumed.jsonl"
    cfg = _config(train_kit, root, source, sources, workers=1)
    result = _fit(train_kit, cfg, source, sources, log)
    records = read_metrics(log)
    assert [r["step"] for r in records] == list(range(N + 1, 2 * N + 1))
    assert result.steps == 2 * N and result.completed
    ema = load_file(str(Path(result.export_dir) / "ema.safetensors"))
    assert all(torch.isfinite(v).all() for v in ema.values())
    import json

    summary = json.loads((Path(result.export_dir) / "summary.json").read_text())
    # The EMA came back from the 2-worker checkpoint: N updates before, N after.
    assert summary["world_size"] == 1 and summary["ema_updates"] == 2 * N


def test_zero3_rounds_resume_exactly_with_ema(train_kit, sources, tmp_path):
    """ASHA's training rounds under ZeRO-3: round 1 stops at N (the sweep's `stop_after_step`),
    the intermediate evaluation reads the EMA from the checkpoint, round 2 resumes the same run.

    Every round after the first is a resume, and under ZeRO-3 the EMA's start is collective: a
    resume where rank 0 (which alone holds the EMA) skipped the gathers that the other ranks
    entered used to hang. Losses and the exported `model`/`ema` must equal an uninterrupted run.
    And under ZeRO-3 the EMA is fed gathered full parameters: the uninterrupted run's EMA
    equals a ZeRO-0 run's.
    """
    from orchestrator.train.driver import checkpoint_ema_weights

    def config(root, zero_stage=3):
        return train_kit.config(
            root, zero_stage=zero_stage, steps=2 * N, checkpoint_every=N, workers=2
        )

    def fit(cfg, log, stop_after_step=None):  # on the latent cache's shard layout
        stream = _stream(cfg, "latents", sources)
        return train_kit.fit(cfg, "generator", log, stream=stream, stop_after_step=stop_after_step)

    full_log, zero0_log = tmp_path / "full.jsonl", tmp_path / "zero0.jsonl"
    full = fit(config(tmp_path / "uninterrupted"), full_log)
    full_records = read_metrics(full_log)
    zero0 = fit(config(tmp_path / "zero0", 0), zero0_log)
    for r0, r3 in zip(read_metrics(zero0_log), full_records, strict=True):
        assert r3["loss"] == pytest.approx(r0["loss"], rel=1e-5), r3["step"]
    ema0 = load_file(str(Path(zero0.export_dir) / "ema.safetensors"))
    ema3 = load_file(str(Path(full.export_dir) / "ema.safetensors"))
    model3 = load_file(str(Path(full.export_dir) / "model.safetensors"))
    assert set(ema3) == set(model3) == set(ema0)
    for key in ema3:
        torch.testing.assert_close(ema3[key], ema0[key], rtol=1e-5, atol=1e-6)
    # The EMA trails the trained weights (decay 0.995 over 2N updates).
    assert [k for k in model3 if not torch.equal(model3[k], ema3[k])]
    summary = json.loads((Path(full.export_dir) / "summary.json").read_text())
    assert summary["ema_updates"] == 2 * N and summary["zero_stage"] == 3

    cfg = config(tmp_path / "rounds")
    first_log, second_log = tmp_path / "round1.jsonl", tmp_path / "round2.jsonl"
    first = fit(cfg, first_log, stop_after_step=N)
    assert not first.completed and first.steps == N
    step, ema = checkpoint_ema_weights(cfg, Storage.from_uri(cfg.storage))
    assert step == N and all(torch.isfinite(v).all() for v in ema.values())
    second = fit(cfg, second_log)
    second_records = read_metrics(second_log)
    assert [r["step"] for r in read_metrics(first_log)] == list(range(1, N + 1))
    assert [r["step"] for r in second_records] == list(range(N + 1, 2 * N + 1))
    assert second.steps == full.steps == 2 * N
    for before, after in zip(full_records[N:], second_records, strict=True):
        assert before["epoch"] == after["epoch"]
        for term in TERMS["generator"]:
            assert after[term] == before[term], (after["step"], term)
    for name in ("model", "ema"):
        a = load_file(str(Path(full.export_dir) / f"{name}.safetensors"))
        b = load_file(str(Path(second.export_dir) / f"{name}.safetensors"))
        assert set(a) == set(b)
        assert all(torch.equal(a[key], b[key]) for key in a), name
