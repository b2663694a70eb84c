"""Reproducible class-conditional sample generation: per-index noise and labels, sample, decode.

Sample `i` of a run is a function of (seed, i) and the models alone: its initial noise and its
class label are drawn from random streams keyed by the index, never from a shared stream that
advances as batches go by. Which worker produces a sample, and when, therefore does not change it.
What still can is the batch it is computed in (matmul reductions depend on the batch shape and
the thread count), so callers fix the batch composition (see `orchestrator/evaluation/generate.py`: fixed
chunks of the index range) and the torch thread count.

Seeding scheme (recorded in every sample manifest as `RNG_SCHEME`): the stream of index `i` is
numpy's PCG64 seeded with `SeedSequence([seed, stream, i])`, with `stream` 0 for noise, 1 for
uniform labels, 2 for the per-block class permutations of balanced labels and 3 for the noise
the ancestral `ddpm` sampler adds at each step (a row's draws follow one another in its stream). torch's CPU
generator is not used because it keys only on the low 32 bits of its seed (`manual_seed(7)` and
`manual_seed(7 + 2**32)` give the same numbers), so `seed * 2**32 + i` would ignore the seed,
and any 32-bit hash of (seed, i) collides somewhere in 50K samples about one run in four.

Decoding follows the reference (`tokenizer/vavae.py::decode_to_images`): de-normalise with
`LatentStats.invert`, decode, `clamp(127.5 * x + 128, 0, 255)`, then the uint8 cast truncates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from workloads.dit.latent_norm import LatentStats
from workloads.samplers import SamplerSpec, sample

LABEL_POLICIES = ("uniform", "balanced")
NOISE_STREAM, UNIFORM_LABEL_STREAM, BALANCED_LABEL_STREAM, STEP_NOISE_STREAM = 0, 1, 2, 3
RNG_SCHEME = (
    "numpy PCG64(SeedSequence([seed, stream, index])); streams noise=0 uniform=1 balanced=2 "
    "ddpm-step=3"
)


def _index_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _check_indices(indices: Sequence[int]) -> list[int]:
    checked = [int(i) for i in indices]
    if any(i < 0 for i in checked):
        raise ValueError("sample indices must be non-negative")
    return checked


def initial_noise(
    indices: Sequence[int],
    shape: Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal noise (len(indices), *shape), row k drawn from the stream of indices[k].

    Drawn on the CPU in float32, so the values do not depend on the device they are moved to.
    """
    rows = [
        _index_rng(seed, NOISE_STREAM, i).standard_normal(tuple(shape), dtype=np.float32)
        for i in _check_indices(indices)
    ]
    return torch.from_numpy(np.stack(rows)).to(device)


def step_noise(
    indices: Sequence[int], shape: Sequence[int], seed: int, device: torch.device | str = "cpu"
) -> Callable[[], torch.Tensor]:
    """Fresh standard normals (len(indices), *shape) per call, row k from index k's own stream:
    the ancestral sampler's per-step noise, as independent of batching as the initial noise."""
    streams = [_index_rng(seed, STEP_NOISE_STREAM, i) for i in _check_indices(indices)]

    def draw() -> torch.Tensor:
        rows = [rng.standard_normal(tuple(shape), dtype=np.float32) for rng in streams]
        return torch.from_numpy(np.stack(rows)).to(device)

    return draw


def class_labels(indices: Sequence[int], num_classes: int, policy: str, seed: int) -> torch.Tensor:
    """Class label (int64) of each sample index.

    `uniform`: an independent uniform draw from [0, num_classes) per index, as the reference's
    per-sample `torch.randint` (FID-50K is computed on such labels).
    `balanced`: the index range is cut into consecutive blocks of `num_classes` indices, and block
    b = i // num_classes assigns its classes by a permutation seeded with (seed, b), so index i
    gets `permutation_b[i % num_classes]`. Each block holds every class once, hence for any first
    N indices each class has floor(N/K) or ceil(N/K) samples; and since labels do not depend on N,
    a 10K run is the prefix of a 50K run with the same seed.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    checked = _check_indices(indices)
    if policy == "uniform":
        labels = [
            int(_index_rng(seed, UNIFORM_LABEL_STREAM, i).integers(num_classes)) for i in checked
        ]
    elif policy == "balanced":
        blocks = {i // num_classes for i in checked}
        permutations = {
            b: _index_rng(seed, BALANCED_LABEL_STREAM, b).permutation(num_classes) for b in blocks
        }
        labels = [int(permutations[i // num_classes][i % num_classes]) for i in checked]
    else:
        raise ValueError(f"label policy must be one of {LABEL_POLICIES}, got {policy!r}")
    return torch.tensor(labels, dtype=torch.int64)


@torch.no_grad()
def decode_to_uint8(
    tokenizer: nn.Module, latents: torch.Tensor, stats: LatentStats
) -> torch.Tensor:
    """Model-space latents (B, C, h, w) -> uint8 images (B, H, W, 3) on the CPU."""
    images = tokenizer.decode(stats.invert(latents))
    # +128 rather than +127.5, then truncation by the cast: the reference's rounding, bit for bit
    # (it equals rounding 127.5 * (x + 1) half up).
    pixels = torch.clamp(127.5 * images + 128.0, 0, 255)
    return pixels.permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)


@torch.no_grad()
def generate_chunk(
    dit: nn.Module,
    tokenizer: nn.Module,
    stats: LatentStats,
    indices: Sequence[int],
    spec: SamplerSpec,
    seed: int,
    num_classes: int,
    label_policy: str,
    latent_shape: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate the samples `indices` as one batch: (uint8 images (B, H, W, 3), int64 labels (B,)).

    Both models must be in eval mode and on the same device. The result is bit-identical for the
    same `indices` batch, models, device and thread count, whoever computes it.
    """
    device = next(dit.parameters()).device
    noise = initial_noise(indices, latent_shape, seed, device)
    labels = class_labels(indices, num_classes, label_policy, seed)
    steps = step_noise(indices, latent_shape, seed, device) if spec.method == "ddpm" else None
    latents = sample(dit, noise, labels.to(device), spec, step_noise=steps)
    return decode_to_uint8(tokenizer, latents, stats), labels
