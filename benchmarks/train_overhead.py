"""What Ray Train + DeepSpeed cost: loop overhead, and memory per worker by ZeRO stage.

1. Overhead: steady-state optimizer steps/s of the same debug-size LightningDiT step (latent
   sampling from moments, rectified-flow loss, AdamW, EMA) run bare in this Python process and
   inside a 1-worker `TorchTrainer` with DeepSpeed ZeRO-0 (our `train_loop_per_worker`, Ray
   Data feeding it). Start-up is excluded on both sides: the bare loop discards `--warmup`
   steps; inside the trainer the rate comes from the loop's own `samples_per_s` reports, whose
   clock starts after the engine is built and skips the first `--warmup` steps. The bare loop
   runs before and after the trainer (their mean is the baseline). Both use one torch thread
   (Ray gives the 1-CPU worker OMP_NUM_THREADS=1), and the data fits one epoch. The trainer
   reports every `--warmup` steps: Train V2's controller takes a worker's report only once per
   health check (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, which `fit_stage` sets to 0.5 s unless
   given) through a one-slot queue, so a loop reporting more often than that blocks in
   `ray.train.report`; `log_every` must span longer.
2. Memory: 2 workers on CPU train `--memory-model` for a few steps under ZeRO 0/1/2/3; reported
   per worker (rank 0) as bytes the engine holds for parameters and for optimizer state (fp32
   masters + Adam moments), plus the worker's peak RSS.

    python benchmarks/train_overhead.py [--steps 60] [--warmup 10] [--out result.json]

3. `--gpu-zero2` (instead of 1 and 2): one GPU worker trains `--gpu-model` under ZeRO-2 in
   bf16 through the same `TorchTrainer` (NCCL, Ray Train's backend on GPU workers); reports
   steps/s and peak GPU memory. `benchmarks/gpu_check.sh` runs it.

    python benchmarks/train_overhead.py --gpu-zero2 [--gpu-model LightningDiT-B/1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import PRESETS, resolve
from orchestrator.data.sampler import LatentBatchSampler
from orchestrator.storage.store import Storage
from orchestrator.train.callbacks import MetricsFileCallback, read_metrics
from orchestrator.train.driver import fit_stage
from workloads.dit import EMA, LatentStats, LightningDiT_models, RectifiedFlowObjective

# Rows of the memory runs (a few steps each).
MEMORY_ROWS = 512


def experiment(
    root: Path,
    *,
    model: str,
    steps: int,
    batch: int,
    workers: int,
    cpus_per_worker: float,
    zero_stage: int,
    log_every: int,
    use_gpu: str = "no",
    precision: str = "fp32",
):
    base = PRESETS["debug_cpu"]()
    training = replace(
        base.generator.training,
        global_batch_size=batch,
        steps=steps,
        zero_stage=zero_stage,
        precision=precision,
        log_every=log_every,
        checkpoint_every=10**9,
        keep_checkpoints=1,
    )
    generator = replace(
        base.generator,
        model=replace(base.generator.model, name=model),
        training=training,
    )
    resources = replace(
        base.resources,
        use_gpu=use_gpu,
        generator_workers=workers,
        cpus_per_worker=cpus_per_worker,
        max_failures=0,
    )
    return resolve(replace(base, generator=generator, resources=resources, storage=str(root)))


def moments(cfg, rows: int) -> list[dict]:
    rng = np.random.default_rng(0)
    shape = (cfg.generator.model.in_channels, *(2 * [cfg.generator.model.input_size]))
    return [
        {
            "mean": rng.normal(size=shape).astype(np.float32),
            "logvar": np.full(shape, -2.0, np.float32),
            "mean_flip": rng.normal(size=shape).astype(np.float32),
            "logvar_flip": np.full(shape, -2.0, np.float32),
            "label": i % 10,
        }
        for i in range(rows)
    ]


def latent_stats(cfg) -> dict:
    channels = cfg.generator.model.in_channels
    return {"mean": [0.0] * channels, "std": [1.0] * channels}


def bare_steps_per_s(cfg, items: list[dict], steps: int, warmup: int) -> float:
    """The loop without Ray or DeepSpeed: same model, sampler, objective, AdamW and EMA."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    m = cfg.generator.model
    model = LightningDiT_models[m.name](
        input_size=m.input_size,
        in_channels=m.in_channels,
        num_classes=cfg.dataset.num_classes,
        class_dropout_prob=m.class_dropout_prob,
    )
    opt = cfg.generator.optimizer
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay
    )
    ema = EMA.from_model(model, decay=cfg.generator.ema.decay)
    sampler = LatentBatchSampler(LatentStats.from_dict(latent_stats(cfg)), flip=True)
    objective = RectifiedFlowObjective()
    generator = torch.Generator().manual_seed(0)
    batch = cfg.generator.training.global_batch_size
    columns = {key: np.stack([row[key] for row in items]) for key in items[0]}
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        start = (step * batch) % (len(items) - batch)
        tensors = {
            key: torch.from_numpy(value[start : start + batch]) for key, value in columns.items()
        }
        z, labels = sampler(tensors, generator)
        loss = objective(model, z, labels, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model.named_parameters())
    return steps / (time.perf_counter() - started)


def trainer_run(cfg, items: list[dict], log: Path):
    import ray

    return fit_stage(
        cfg,
        Storage.from_uri(cfg.storage),
        "generator",
        # Blocks of 512 rows, like Parquet row groups of the latent cache (the default would
        # cut the rows into ~200 tiny blocks, one split-coordinator round trip each).
        ray.data.from_items(items, override_num_blocks=max(1, len(items) // 512)),
        num_rows=len(items),
        inputs={"latent_stats": latent_stats(cfg)},
        callbacks=[MetricsFileCallback(log)],
    )


def trainer_steps_per_s(cfg, items: list[dict], work: Path, warmup: int) -> float:
    log = work / "overhead.jsonl"
    trainer_run(cfg, items, log)
    records = [r for r in read_metrics(log) if r["step"] > warmup]
    batch = cfg.generator.training.global_batch_size
    # Each report's rate covers the steps since the previous one: weight by interval length.
    steps = [records[0]["step"] - warmup] + [
        b["step"] - a["step"] for a, b in zip(records, records[1:])
    ]
    seconds = sum(n * batch / r["samples_per_s"] for n, r in zip(steps, records))
    return sum(steps) / seconds


def memory_by_stage(model: str, work: Path, stages: list[int]) -> dict:
    results = {}
    for stage in stages:
        # 0.5 CPU per worker leaves a CPU to Ray Data on a 2-CPU machine.
        cfg = experiment(
            work / f"zero{stage}",
            model=model,
            steps=3,
            batch=4,
            workers=2,
            cpus_per_worker=0.5,
            zero_stage=stage,
            log_every=1,
        )
        log = work / f"memory{stage}.jsonl"
        trainer_run(cfg, moments(cfg, MEMORY_ROWS), log)
        last = read_metrics(log)[-1]
        results[f"zero{stage}"] = {
            "param_mib": round(last["param_mib"], 1),
            "optimizer_mib": round(last["optimizer_mib"], 1),
            "rss_peak_mib": round(last["rss_peak_mib"], 1),
        }
    return results


def gpu_zero2(model: str, steps: int, batch: int, log_every: int) -> dict:
    """One GPU worker, ZeRO-2, bf16: steps/s after the first report and the peak GPU memory."""
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="gpu-zero2-") as tmp:
        cfg = experiment(
            Path(tmp) / "run",
            model=model,
            steps=steps,
            batch=batch,
            workers=1,
            cpus_per_worker=2.0,
            zero_stage=2,
            log_every=log_every,
            use_gpu="yes",
            precision="bf16",
        )
        log = Path(tmp) / "metrics.jsonl"
        result = trainer_run(cfg, moments(cfg, (steps + 1) * batch), log)
        records = read_metrics(log)
    ray.shutdown()
    last = records[-1]
    return {
        "model": model,
        "global_batch": batch,
        "steps": result.steps,
        "completed": result.completed,
        "zero_stage": 2,
        "precision": "bf16",
        # Each report's rate covers the steps since the previous one; the first includes warm-up.
        "steps_per_s": round(last["samples_per_s"] / batch, 3),
        "gpu_mem_peak_mib": round(last["gpu_mem_peak_mib"], 1),
        "loss": last["loss"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="LightningDiT-Debug/1")
    parser.add_argument(
        "--batch", type=int, default=64, help="global batch (debug_cpu generator default)"
    )
    parser.add_argument(
        "--steps", type=int, default=200, help="measured steps, a multiple of --warmup"
    )
    parser.add_argument("--warmup", type=int, default=100, help="also the report interval")
    parser.add_argument("--memory-model", default="LightningDiT-B/2")
    parser.add_argument("--zero-stages", default="0,1,2,3")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--gpu-zero2", action="store_true", help="only the 1-GPU ZeRO-2 bf16 run (section 3)"
    )
    parser.add_argument("--gpu-model", default="LightningDiT-B/1")
    parser.add_argument("--gpu-steps", type=int, default=60)
    parser.add_argument("--gpu-batch", type=int, default=64)
    args = parser.parse_args(argv)
    if args.gpu_zero2:
        result = gpu_zero2(args.gpu_model, args.gpu_steps, args.gpu_batch, args.gpu_steps // 3)
        print(json.dumps(result))
        return 0 if result["completed"] else 1

    import ray

    # Set before Ray starts: the Train workers inherit them (CPU DeepSpeed, quiet Train V2).
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="train-overhead-") as tmp:
        work = Path(tmp)
        total = args.warmup + args.steps
        cfg = experiment(
            work / "overhead",
            model=args.model,
            steps=total,
            batch=args.batch,
            workers=1,
            cpus_per_worker=1.0,
            zero_stage=0,
            log_every=args.warmup,
        )
        # One epoch covers the run: a new epoch restarts the Ray Data pipeline, a per-epoch
        # cost that a real (ImageNet-sized) epoch amortises over ~1000 steps.
        items = moments(cfg, (total + 1) * args.batch)
        # Bare runs before and after bracket the trainer run against drifting machine load.
        bare_before = bare_steps_per_s(cfg, items, args.steps, args.warmup)
        in_trainer = trainer_steps_per_s(cfg, items, work, args.warmup)
        bare_after = bare_steps_per_s(cfg, items, args.steps, args.warmup)
        bare = (bare_before + bare_after) / 2
        stages = [int(s) for s in args.zero_stages.split(",") if s]
        memory = memory_by_stage(args.memory_model, work, stages)
    ray.shutdown()

    with torch.device("meta"):
        sized = LightningDiT_models[args.memory_model](input_size=8, in_channels=8)
    params = sum(p.numel() for p in sized.parameters())
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "overhead": {
            "model": args.model,
            "global_batch": args.batch,
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "bare_steps_per_s": round(bare, 3),
            "bare_before_after": [round(bare_before, 3), round(bare_after, 3)],
            "trainer_zero0_steps_per_s": round(in_trainer, 3),
            "ratio_bare_over_trainer": round(bare / in_trainer, 3),
            "note": "steady state after warm-up; start-up (workers, engine, data pipeline) excluded",
        },
        "memory": {
            "model": args.memory_model,
            "parameters": params,
            "workers": 2,
            "device": "cpu",
            "what": "rank 0: engine-held parameter bytes and optimizer-state bytes (fp32 masters "
            "+ Adam moments); rss_peak_mib is the worker process's peak RSS",
            "per_stage": memory,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
