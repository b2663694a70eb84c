"""A small supervised training loop shared by the proxy evaluator CNN and the stand-in ViT.

Both are trained once per dataset identity on the embedded dataset's train split, on CPU, in well
under two minutes, so the loop is deliberately plain: AdamW, linear warm-up then cosine decay,
random translation + horizontal flip (every embedded class is flip-invariant).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workloads.datasets.embedded import read_split
from workloads.metrics.images import as_nchw_tensor, to_unit_range


@dataclasses.dataclass(frozen=True)
class FitConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    max_shift: int = 3  # random translation, in pixels
    label_smoothing: float = 0.0
    seed: int = 0


def as_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 arrays or (N, 3, H, W) uint8 / [-1, 1] tensors -> float32 NCHW in [-1, 1]."""
    return to_unit_range(as_nchw_tensor(images))


def random_shift_and_flip(batch: torch.Tensor, max_shift: int, generator: torch.Generator):
    """Per-sample translation by up to `max_shift` pixels (edge-replicated) and a random h-flip."""
    if max_shift > 0:
        size = batch.shape[-1]
        padded = F.pad(batch, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=generator)
        batch = torch.stack(
            [p[:, dy : dy + size, dx : dx + size] for p, (dy, dx) in zip(padded, offsets.tolist())]
        )
    flip = torch.rand(len(batch), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def fit_classifier(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: FitConfig
) -> nn.Module:
    """Train `model` in place on float [-1, 1] `images` (N, 3, H, W) and int64 `labels`."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = max(1, int(config.warmup_fraction * total_steps))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = random_shift_and_flip(images[index], config.max_shift, generator)
            loss = F.cross_entropy(
                model(batch), labels[index], label_smoothing=config.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return model


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict_labels(model, images) == labels).float().mean().item()


def train_on_image_folder(
    build_model: Callable[[int], nn.Module],
    dataset_root: Path,
    fit: FitConfig,
    resolution: int | None = None,
) -> tuple[nn.Module, dict]:
    """Train ``build_model(num_classes)`` on ``train/``, score it on ``val/``; returns the model
    and metadata (class names, fit config, wall and CPU seconds, threads, val accuracy)."""
    train_images, train_labels, class_names = read_split(dataset_root, "train", resolution)
    val_images, val_labels, _ = read_split(dataset_root, "val", resolution)
    started, started_cpu = time.perf_counter(), time.process_time()
    # Seed initialisation and training without disturbing the caller's global RNG.
    with torch.random.fork_rng():
        torch.manual_seed(fit.seed)
        model = build_model(len(class_names))
        fit_classifier(model, as_model_input(train_images), torch.from_numpy(train_labels), fit)
    metadata = {
        "class_names": class_names,
        "resolution": int(train_images.shape[1]),
        "fit_config": dataclasses.asdict(fit),
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_cpu_seconds": round(time.process_time() - started_cpu, 2),
        "torch_threads": torch.get_num_threads(),
        "val_accuracy": accuracy(model, as_model_input(val_images), torch.from_numpy(val_labels)),
    }
    return model, metadata
