"""Seconds per LightningDiT training step (objective forward + backward + AdamW step), as JSON.

CPU default (well under a minute): LightningDiT-Debug/1 in float32 on 16x16x32 latents.
`--device cuda` defaults to B/1 and XL/1 at batch 32 and 64 under bf16 autocast and reports MFU
against an analytic matmul FLOP count (`training_flops`). Examples::

    python benchmarks/dit_step.py
    python benchmarks/dit_step.py --device cuda [--compile] [--checkpointing]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from workloads.dit import LightningDiT, LightningDiT_models, RectifiedFlowObjective

# Dense bf16 peak TFLOP/s by device-name substring; the first match wins.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
TIMESTEP_FEATURES = 256


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs to know about a LightningDiT."""

    tokens: int
    hidden: int
    depth: int
    patch: int
    in_channels: int
    out_channels: int
    mlp_hidden: int
    swiglu: bool
    adaln_chunks: int

    @classmethod
    def of(cls, model: LightningDiT) -> Shape:
        block = model.blocks[0]
        swiglu = hasattr(block.mlp, "w12")
        mlp_hidden = block.mlp.w3.in_features if swiglu else block.mlp.fc1.out_features
        return cls(
            tokens=model.x_embedder.num_patches,
            hidden=model.hidden_size,
            depth=len(model.blocks),
            patch=model.patch_size,
            in_channels=model.in_channels,
            out_channels=model.out_channels,
            mlp_hidden=mlp_hidden,
            swiglu=swiglu,
            adaln_chunks=block.adaLN_modulation[-1].out_features // model.hidden_size,
        )


def training_flops(shape: Shape, batch: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one training step; backward counted as 2x forward.

    Per sample: patch embedding, timestep MLP, per block the qkv/out projections, the two
    attention matmuls (QK^T and AV), the MLP and the per-sample adaLN projection, then the final
    adaLN and output projection. Norms, activations, RoPE and softmax are ignored.
    """
    t, d = shape.tokens, shape.hidden
    patch_embed = 2 * t * shape.in_channels * shape.patch**2 * d
    time_mlp = 2 * TIMESTEP_FEATURES * d + 2 * d * d
    attention = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d
    mlp_matrices = 3 if shape.swiglu else 2  # w12 counts twice (gate and value)
    mlp = 2 * t * d * shape.mlp_hidden * mlp_matrices
    adaln = 2 * d * shape.adaln_chunks * d
    final = 2 * d * 2 * d + 2 * t * d * shape.patch**2 * shape.out_channels
    forward = patch_embed + time_mlp + shape.depth * (attention + mlp + adaln) + final
    return 3.0 * forward * batch


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_step(args: argparse.Namespace, name: str, batch: int) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = LightningDiT_models[name](
        input_size=args.input_size, in_channels=args.in_channels, num_classes=args.num_classes
    ).to(device)
    model.train()
    model.use_checkpoint = args.checkpointing
    # Labels are generated in range, so skip the per-step host sync of the label check.
    model.check_label_range = False
    shape = Shape.of(model)
    step_model = torch.compile(model) if args.compile else model
    objective = RectifiedFlowObjective()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0)
    latents = torch.randn(batch, args.in_channels, args.input_size, args.input_size, device=device)
    labels = torch.randint(0, args.num_classes, (batch,), device=device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            loss = objective(step_model, latents, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    per_step = statistics.median(seconds)
    flops = training_flops(shape, batch)
    peak = peak_tflops(device, args.peak_tflops)
    achieved = flops / per_step / 1e12
    result = {
        "model": name,
        "batch": batch,
        "seconds_per_step": per_step,
        "seconds_min": min(seconds),
        "samples_per_second": batch / per_step,
        "train_tflops_per_step": flops / 1e12,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "shape": asdict(shape),
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", help="registry names (default depends on device)")
    parser.add_argument("--batch-sizes", nargs="+", type=int)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--in-channels", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for cuda, off for cpu)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU when the GPU is not in the table",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    args.models = args.models or (
        ["LightningDiT-B/1", "LightningDiT-XL/1"] if on_gpu else ["LightningDiT-Debug/1"]
    )
    args.batch_sizes = args.batch_sizes or ([32, 64] if on_gpu else [16])
    args.steps = args.steps or (20 if on_gpu else 10)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 2)
    args.bf16 = on_gpu if args.bf16 is None else args.bf16
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        # TF32 for any float32 matmul left outside autocast, as the reference scripts enable.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    results = [
        time_training_step(args, name, batch) for name in args.models for batch in args.batch_sizes
    ]
    report = {
        "benchmark": "dit_step",
        "device": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if args.bf16 else "float32",
        "compile": args.compile,
        "checkpointing": args.checkpointing,
        "input": [args.in_channels, args.input_size, args.input_size],
        "steps": args.steps,
        "warmup": args.warmup,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
