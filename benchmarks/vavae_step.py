"""Seconds per VA-VAE training step (forward, backward and both optimizer steps).

CPU (default, < 1 min):   python benchmarks/vavae_step.py
GPU, paper tokenizer:     python benchmarks/vavae_step.py --device cuda --preset f16d32 \
                              --batch 8 --foundation dinov2

Everything is randomly initialised (no downloads). The GAN is on from step 0 so every term of
the objective runs. Prints one JSON object.
"""

import argparse
import json
import time

import torch

from workloads.foundation import build_foundation
from workloads.vavae import (
    LPIPS,
    VAVAEObjective,
    build_optimizers,
    build_single_optimizer,
    build_vavae,
    train_step_single_backward,
    train_step_two_optimizers,
    vavae_presets,
)

# A small stand-in ViT for CPU runs; its patch size is set so its grid equals the latent grid.
TINY_FOUNDATION = ("vit_tiny_patch16_224", {"embed_dim": 192, "depth": 2, "num_heads": 3})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(vavae_presets))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=None, help="default: preset resolution")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--foundation",
        default="tiny",
        choices=["none", "tiny", "dinov2", "mae"],
        help="VF target network (random init); none disables the VF loss",
    )
    parser.add_argument("--no-lpips", action="store_true", help="drop the perceptual term")
    parser.add_argument(
        "--form",
        default="two_optimizers",
        choices=["two_optimizers", "single_backward"],
        help="reference two-optimizer order or the single-backward (DeepSpeed) form",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 keeps timings stable on a shared machine; 0: torch default)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    image_size = args.image_size or vavae_presets[args.preset]["resolution"]

    foundation = None
    if args.foundation == "tiny":
        factor = 2 ** (len(vavae_presets[args.preset]["ch_mult"]) - 1)
        name, kwargs = TINY_FOUNDATION
        kwargs = {**kwargs, "img_size": image_size, "patch_size": factor}
        foundation = build_foundation(name, "random_init", timm_kwargs=kwargs)
    elif args.foundation != "none":
        foundation = build_foundation(args.foundation, "random_init")
    vf_dim = None if foundation is None else foundation.embed_dim
    model = build_vavae(args.preset, vf_feature_dim=vf_dim).to(device)
    lpips = None if args.no_lpips else LPIPS()
    objective = VAVAEObjective(
        lpips,
        foundation,
        use_vf=foundation is not None,
        perceptual_weight=0.0 if lpips is None else 1.0,
        disc_start=0,
    ).to(device)
    if args.form == "two_optimizers":
        ae_optimizer, disc_optimizer = build_optimizers(model)

        def step(x: torch.Tensor, index: int) -> None:
            train_step_two_optimizers(model, objective, x, index, ae_optimizer, disc_optimizer)
    else:
        optimizer = build_single_optimizer(model)

        def step(x: torch.Tensor, index: int) -> None:
            train_step_single_backward(model, objective, x, index, optimizer)

    x = torch.rand(args.batch, 3, image_size, image_size, device=device) * 2 - 1
    # The reference trains in fp32; on GPU we measure the bf16-autocast speed users will run.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with autocast:
        for index in range(args.warmup):
            step(x, index)
        synchronize()
        start = time.perf_counter()
        for index in range(args.warmup, args.warmup + args.steps):
            step(x, index)
        synchronize()
    seconds = (time.perf_counter() - start) / args.steps

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "preset": args.preset,
        "batch": args.batch,
        "image_size": image_size,
        "seconds_per_step": round(seconds, 4),
        "images_per_second": round(args.batch / seconds, 2),
        "form": args.form,
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "foundation": args.foundation,
        "lpips": lpips is not None,
        "steps_timed": args.steps,
        "threads": torch.get_num_threads(),
        "trainable_parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
