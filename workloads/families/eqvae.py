"""EQ-VAE (arXiv 2502.09509): latents equivariant to scaling and rotation.

Source: zelaki/eqvae@c34589c train_eqvae/ldm/models/autoencoder.py L96-175 (`training_step`).
With probability 0.5 the sampled latent is downscaled (bilinear) and rotated by k * 90 degrees,
decoded, and scored against the image under the same transform; otherwise "prior
preservation": with probability 0.25 a downscaled image is reconstructed, else the full one.
One draw per step for the whole batch, as the reference. The loss is the family-independent
objective (L1 + LPIPS + KL + GAN, and the VF loss when configured, on the untransformed latent).

Adaptation: the reference's f8 latents of 256 px images are 32 wide, so its scales k/32 give
whole latent and image sizes (k and 8k). For any latent width h this takes the latent size
floor(h * k/32) and the image size exactly that times the downsampling factor, so decoded and
target images always agree in size; scales whose image would be under 32 px (a 3-layer PatchGAN
and LPIPS's VGG need that much) are not drawn, which never binds at 256 px (the smallest scale
gives 64 px); where no scale is left (tiny test images) the branch rotates without downscaling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workloads.families.base import TokenizerFamily, TrainingView, uniform

P_EQUIVARIANCE = 0.5  # eqvae_config.yaml p_prior
P_LOW_RES_PRIOR = 0.25  # eqvae_config.yaml p_prior_s
SCALE_NUMERATORS = range(8, 32)  # scale = k / 32, k in 8..31 (autoencoder.py L122)
ANGLES = (1, 2, 3)  # k * 90 degrees; 0 is never drawn (autoencoder.py L127)
MIN_IMAGE_SIZE = 32


def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def equivariance_transform(x: torch.Tensor, size: int, angle: int) -> torch.Tensor:
    """Bilinear downscale to `size`, then rot90 by `angle` quarter turns (dims [-1, -2], the
    reference's direction). Applied alike to a latent and to its image (size times f)."""
    return torch.rot90(downscale(x, size), k=angle, dims=[-1, -2])


def latent_sizes(latent_size: int, factor: int) -> list[int]:
    """The latent sizes the scales k/32 give, without those whose image is under 32 px; just the
    full size (rotation only) when none is left."""
    sizes = [latent_size * k // 32 for k in SCALE_NUMERATORS]
    return [n for n in sizes if n >= 1 and n * factor >= MIN_IMAGE_SIZE] or [latent_size]


class EQVAEFamily(TokenizerFamily):
    name = "eqvae"
    source = "zelaki/eqvae@c34589c:train_eqvae/ldm/models/autoencoder.py"

    def training_view(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None
    ) -> TrainingView:
        module = getattr(model, "module", model)
        branch, pick_scale, pick_angle, low_res = uniform((4,), generator, x.device).tolist()
        factor = module.downsample_factor
        sizes = latent_sizes(x.shape[-1] // factor, factor)
        size = sizes[int(pick_scale * len(sizes))]
        if branch >= P_EQUIVARIANCE and low_res < P_LOW_RES_PRIOR and size * factor < x.shape[-1]:
            # Prior preservation at low resolution: encode and reconstruct a smaller image.
            small = downscale(x, size * factor)
            reconstruction, posterior, z_proj = module(small, generator)
            return TrainingView(small, small, reconstruction, posterior, z_proj)
        posterior = module.encode(x)
        z = posterior.sample(generator)
        z_proj = None if module.linear_proj is None else module.linear_proj(z)
        if branch < P_EQUIVARIANCE:
            angle = ANGLES[int(pick_angle * len(ANGLES))]
            target = equivariance_transform(x, size * factor, angle)
            reconstruction = module.decode(equivariance_transform(z, size, angle))
            return TrainingView(x, target, reconstruction, posterior, z_proj)
        return TrainingView(x, x, module.decode(z), posterior, z_proj)


FAMILY = EQVAEFamily()
