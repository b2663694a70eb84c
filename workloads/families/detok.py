"""l-DeTok (arXiv 2507.15856): train the tokenizer to decode noised latents of masked images.

Source: Jiawei-Yang/DeTok@706f7ac models/detok.py (`encode`, `mae_random_masking`) and the
README's training command (`--gamma 3.0 --mask_ratio 0.7`; the script's own defaults are 0).

* Interpolative latent noise: z' = (1 - tau) z + tau * gamma * eps, tau ~ U(0, 1) per sample,
  gamma = 3, on the posterior sample, in training only (inference decodes the mean).
* Input masking at a per-batch ratio max(0, U(-0.1, 0.7)). DeTok's ViT encoder drops the masked
  patch tokens; a convolutional encoder has no tokens to drop, so here the masked patches are
  the f x f pixel blocks behind single latent cells (f = the downsampling factor), set to 0
  (mid-grey in [-1, 1]) in the encoder's input; the same count per sample, ceil as DeTok keeps
  ceil(N (1 - ratio)) visible. The decoder reconstructs the whole unmasked image.
* Then a decoder-only fine-tune (`tokenizer.stages[*].train: decoder`) without noise or masks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workloads.families.base import TokenizerFamily, TrainingView, normal, uniform

GAMMA = 3.0  # README: --gamma 3.0
MASK_RATIO_MAX = 0.7  # README: --mask_ratio 0.7
MASK_RATIO_MIN = -0.1  # detok.py mae_random_masking: max(0, uniform(-0.1, mask_ratio))


def noised_latent(
    z: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor, gamma: float = GAMMA
) -> torch.Tensor:
    """(1 - tau) z + tau * gamma * eps, with one tau per sample (shape (B,))."""
    tau = tau.view(-1, *([1] * (z.ndim - 1))).to(z.dtype)
    return (1 - tau) * z + tau * gamma * eps


def mask_patches(
    x: torch.Tensor, ratio: float, patch: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Zero `N - ceil(N (1 - ratio))` random patch x patch blocks of each image (N per image)."""
    batch, _, height, width = x.shape
    rows, cols = height // patch, width // patch
    cells = rows * cols
    masked = cells - math.ceil(cells * (1 - ratio))
    if masked <= 0:
        return x
    order = uniform((batch, cells), generator, x.device).argsort(dim=1)
    keep = torch.ones(batch, cells, device=x.device, dtype=x.dtype)
    keep.scatter_(1, order[:, :masked], 0.0)
    keep = keep.view(batch, 1, rows, cols)
    keep = keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return x * keep


class DeTokFamily(TokenizerFamily):
    name = "detok"
    source = "Jiawei-Yang/DeTok@706f7ac:models/detok.py"

    def training_view(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None
    ) -> TrainingView:
        module = getattr(model, "module", model)
        factor = module.downsample_factor
        draw = uniform((1,), generator, x.device).item()
        ratio = max(0.0, MASK_RATIO_MIN + (MASK_RATIO_MAX - MASK_RATIO_MIN) * draw)
        posterior = module.encode(mask_patches(x, ratio, factor, generator))
        z = posterior.sample(generator)
        z_proj = None if module.linear_proj is None else module.linear_proj(z)
        tau = uniform((z.shape[0],), generator, z.device)
        reconstruction = module.decode(noised_latent(z, tau, normal(z, generator)))
        return TrainingView(x, x, reconstruction, posterior, z_proj)


FAMILY = DeTokFamily()
