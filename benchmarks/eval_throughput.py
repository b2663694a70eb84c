"""CPU throughput of the evaluators' feature extraction, as JSON.

Times InceptionV3 (torch-fidelity, random weights: same FLOPs as the real ones) and the proxy CNN
on procedurally generated embedded-dataset images. `feature_throughput` takes any named feature
functions, so the orchestrator can add DiT sampling + decoding to the same table.

    .venv/bin/python benchmarks/eval_throughput.py --num-images 64 --threads 2

`--generation` times sample generation instead (DiT sampling + tokenizer decoding, the per-chunk
work of `orchestrator/evaluation/generate.py`): the `debug_cpu` preset on CPU, or with `--device cuda` the
paper preset (LightningDiT-XL/1, 32x16x16 latents, Euler 250 with shift and CFG, f16d32 decoder,
random weights) with the images/s and the projected time of FID-50K on one GPU.

    .venv/bin/python benchmarks/eval_throughput.py --generation --threads 2
    python benchmarks/eval_throughput.py --generation --device cuda --gen-batch-size 64
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import torch

from orchestrator.config import PRESETS, resolve
from orchestrator.storage.models import autoencoder_kwargs, generator_kwargs
from workloads.datasets.embedded import CLASSES, EmbeddedDatasetSpec, render_image
from workloads.dit import LatentStats, LightningDiT_models
from workloads.generation import class_labels, decode_to_uint8, initial_noise
from workloads.metrics.classifier_training import as_model_input
from workloads.metrics.inception import InceptionFeatures
from workloads.metrics.proxy import ProxyCNN
from workloads.samplers import SamplerSpec, sample
from workloads.vavae import AutoencoderKL


@torch.no_grad()
def feature_throughput(
    feature_fns: Mapping[str, Callable[[torch.Tensor], object]],
    images: torch.Tensor,
    batch_size: int = 32,
    warmup_batches: int = 1,
) -> dict[str, dict[str, float]]:
    """Samples/s of each ``name -> fn(batch)`` over `images` (N, 3, H, W), after a warm-up."""
    results = {}
    for name, feature_fn in feature_fns.items():
        for _ in range(warmup_batches):
            feature_fn(images[:batch_size])
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            feature_fn(images[start : start + batch_size])
        seconds = time.perf_counter() - started
        results[name] = {
            "samples_per_s": round(len(images) / seconds, 2),
            "seconds": round(seconds, 3),
            "num_samples": len(images),
            "batch_size": batch_size,
        }
    return results


def embedded_images(num_images: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """(N, 3, S, S) uint8 images of the embedded dataset's classes, rendered in memory."""
    spec = EmbeddedDatasetSpec(image_size=image_size, seed=seed)
    rendered = [
        render_image(CLASSES[i % spec.num_classes], image_size, np.random.default_rng([seed, i]))
        for i in range(num_images)
    ]
    return torch.from_numpy(np.stack(rendered)).permute(0, 3, 1, 2).contiguous()


# =============================================================================================
# Generation: DiT sampling + tokenizer decoding (the work of one chunk in orchestrator/evaluation/generate.py)
# =============================================================================================
FID_SAMPLES = 50_000


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_throughput(
    preset: str,
    device: torch.device,
    batch_size: int,
    batches: int,
    model_name: str | None = None,
    num_steps: int | None = None,
) -> dict:
    """Images/s of noise + labels, sampling and decoding for a preset's models and sampler.

    Models are random-init (the FLOPs of trained ones); latent statistics are the identity.
    Timed: `batches` batches after a 2-grid-point warm-up batch (kernels, allocator).
    """
    cfg = resolve(PRESETS[preset]())
    if model_name is not None:
        model = replace(cfg.generator.model, name=model_name)
        cfg = replace(cfg, generator=replace(cfg.generator, model=model))
    spec = cfg.sampler  # a SamplerSpec
    spec = spec if num_steps is None else replace(spec, num_steps=num_steps)
    kwargs = generator_kwargs(cfg)
    torch.manual_seed(0)
    dit = LightningDiT_models[cfg.generator.model.name](**kwargs).eval().to(device)
    tokenizer = AutoencoderKL(**autoencoder_kwargs(cfg)).eval().to(device)
    channels, grid = kwargs["in_channels"], kwargs["input_size"]
    stats = LatentStats(torch.zeros(channels), torch.ones(channels))

    def one_batch(k: int, batch_spec: SamplerSpec) -> dict[str, float]:
        indices = range(k * batch_size, (k + 1) * batch_size)
        _synchronize(device)
        started = time.perf_counter()
        noise = initial_noise(indices, (channels, grid, grid), cfg.evaluation.seed, device)
        labels = class_labels(indices, kwargs["num_classes"], "uniform", cfg.evaluation.seed)
        labels = labels.to(device)
        _synchronize(device)
        drawn = time.perf_counter()
        latents = sample(dit, noise, labels, batch_spec)
        _synchronize(device)
        sampled = time.perf_counter()
        decode_to_uint8(tokenizer, latents, stats)
        _synchronize(device)
        return {
            "inputs": drawn - started,
            "sampling": sampled - drawn,
            "decoding": time.perf_counter() - sampled,
        }

    one_batch(batches, replace(spec, num_steps=2))
    timings = [one_batch(k, spec) for k in range(batches)]
    phases = {name: sum(t[name] for t in timings) for name in timings[0]}
    total = sum(phases.values())
    count = batch_size * batches
    per_image = total / count
    return {
        "preset": preset,
        "generator": cfg.generator.model.name,
        "parameters": sum(p.numel() for p in dit.parameters()),
        "latent_shape": [channels, grid, grid],
        "image_size": cfg.dataset.resolution,
        "sampler": spec.to_dict(),
        # Network calls per batch on the fixed grid (each on a doubled batch with CFG);
        # dopri5 adapts its steps.
        "model_calls": {"euler": spec.num_steps - 1, "heun": 2 * (spec.num_steps - 1)}.get(
            spec.method
        ),
        "batch_size": batch_size,
        "num_samples": count,
        "seconds": {name: round(value, 3) for name, value in phases.items()},
        "images_per_s": round(count / total, 3),
        "sampling_images_per_s": round(count / phases["sampling"], 3),
        "decoding_images_per_s": round(count / phases["decoding"], 3),
        "projected_hours_fid50k": round(per_image * FID_SAMPLES / 3600, 3),
        "projected_hours_preset_eval": round(per_image * cfg.evaluation.num_samples / 3600, 4),
        "preset_eval_samples": cfg.evaluation.num_samples,
    }


def generation_main(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        # The generation actors' precision: plain fp32, no TF32, no autotuning.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    preset = args.gen_preset or ("paper" if device.type == "cuda" else "debug_cpu")
    result = generation_throughput(
        preset,
        device,
        args.gen_batch_size,
        args.gen_batches,
        model_name=args.gen_model,
        num_steps=args.gen_num_steps,
    )
    if device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return {
        "benchmark": "generation_throughput",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "float32 (TF32 off)" if device.type == "cuda" else "float32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=str, default=None, help="also write the JSON here")
    generation = parser.add_argument_group("generation (--generation)")
    generation.add_argument(
        "--generation", action="store_true", help="time sample generation instead of features"
    )
    generation.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    generation.add_argument(
        "--gen-preset", choices=sorted(PRESETS), help="default: paper on cuda, debug_cpu on cpu"
    )
    generation.add_argument("--gen-model", help="override the preset's LightningDiT size")
    generation.add_argument("--gen-num-steps", type=int, help="override the sampler's grid points")
    generation.add_argument("--gen-batch-size", type=int, default=32)
    generation.add_argument("--gen-batches", type=int, default=2, help="timed batches")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.generation:
        _emit(generation_main(args), args.output)
        return
    images = embedded_images(args.num_images, args.image_size)
    inception = InceptionFeatures(random_init=True)
    proxy = ProxyCNN(num_classes=10).eval()
    results = feature_throughput(
        {
            "inception_v3_random_init": inception,
            "proxy_cnn": lambda batch: proxy.features(as_model_input(batch)),
        },
        images,
        args.batch_size,
    )
    report = {
        "benchmark": "eval_feature_throughput",
        "device": "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "image_size": args.image_size,
        "results": results,
    }
    _emit(report, args.output)


def _emit(report: dict, output: str | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        with open(output, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
