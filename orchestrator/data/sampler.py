"""Worker-side turn of cached moments into generator inputs (pure torch, no Ray).

The cache keeps the posterior (mean, logvar) of each image and of its flip rather than one
frozen sample, so every epoch draws a fresh z = mean + std * eps, as training on the fly would
(MAR, REPA and EDM2 cache moments for the same reason). A deterministic encoder's cache (RAE)
has means only: z is the mean. The flip follows the reference: pick the pre-extracted flipped
latents with p = 0.5.
"""

from __future__ import annotations

import torch

from workloads.dit.latent_norm import LatentStats


def stored_to_float(values: torch.Tensor) -> torch.Tensor:
    """Cache tensors -> float32; uint16 is the bit pattern of a bfloat16 cache (Arrow has none)."""
    if values.dtype == torch.uint16:
        return values.view(torch.bfloat16).float()
    return values.float()


class LatentBatchSampler:
    """`(batch of moments, generator) -> (normalised z, label)`; random only through `generator`.

    `generator` must live on the batch's device. Per call it draws the B flip coins first, then
    the noise, so a seeded generator replays a run exactly.
    """

    def __init__(self, stats: LatentStats, flip: bool = True):
        self.stats = stats
        self.flip = flip

    def __call__(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = stored_to_float(batch["mean"])
        logvar = stored_to_float(batch["logvar"]) if "logvar" in batch else None
        if self.flip:
            if "mean_flip" not in batch:
                raise KeyError(
                    "flip=True but the batch has no flipped moments (cache built with flip=false)"
                )
            use_flip = torch.rand(mean.shape[0], generator=generator, device=mean.device) < 0.5
            use_flip = use_flip.view(-1, 1, 1, 1)
            mean = torch.where(use_flip, stored_to_float(batch["mean_flip"]), mean)
            if logvar is not None:
                logvar = torch.where(use_flip, stored_to_float(batch["logvar_flip"]), logvar)
        if logvar is None:
            return self.stats.apply(mean), batch["label"].long()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.stats.apply(z), batch["label"].long()
