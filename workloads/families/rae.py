"""RAE (arXiv 2510.11690): diffusion in the latent space of a frozen representation encoder.

Source: bytetriper/RAE@a4d18c4 src/stage1/rae.py (`noising`, `encode`, `decode`),
src/train_stage1.py (the decoder's loss) and configs/stage1/training/DINOv2-B_decXL.yaml.
The encoder (DINOv2-B with registers) is frozen; only the ViT decoder and the discriminator
train. The decoder learns on noised latents: z' = z + sigma * eps, sigma = tau * U(0, 1) per
sample, tau = 0.8, in training only (inference decodes z). The loss is the shared objective's
L1 + LPIPS + adaptive GAN (its KL term is 0: the latent is deterministic). Adaptations: the
shared objective's PatchGAN stands in for RAE's DINO-S/8 discriminator with DiffAug; its L1 is
taken in [-1, 1] (RAE's in [0, 1], half as large beside LPIPS) and its adaptive weight's eps is
taming's 1e-4 (RAE's 1e-6).
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.families.base import TokenizerFamily, TrainingView, normal, uniform

NOISE_TAU = 0.8  # DINOv2-B_decXL.yaml: noise_tau: 0.8 ("training 0.8, at inference ... 0")


class RAEFamily(TokenizerFamily):
    name = "rae"
    source = "bytetriper/RAE@a4d18c4:src/stage1/rae.py"
    # A frozen encoder cannot be aligned to a foundation model: it *is* one.
    uses_vf_loss = False
    frozen_encoder = True
    # train_stage1.py `calculate_adaptive_weight` on decoder_pred.weight (max_d_weight 1e4).
    adaptive_gan = True
    # train_stage1.py L382-387: (recon - images).abs().mean() + perceptual_weight * LPIPS mean.
    mean_reconstruction = True
    # calculate_stat.py L91-92: latent mean and var over the batch dimension only, (C, H, W).
    position_stats = True

    @property
    def foundation_options(self) -> dict:
        """The foundation model `tokenizer.vf` names is the encoder, built as `RAE` builds it."""
        from workloads.rae.model import ENCODER_OPTIONS  # lazily: workloads.rae imports us back

        return dict(ENCODER_OPTIONS)

    def inference_model(self, kwargs: dict) -> nn.Module:
        from workloads.rae import RAE  # lazily, as the base family's AutoencoderKL

        return RAE(**kwargs)

    def training_model(
        self,
        kwargs: dict,
        *,
        vf_feature_dim: int | None,
        disc_ndf: int,
        disc_layers: int,
        encoder: nn.Module | None = None,
    ) -> nn.Module:
        from workloads.rae import RAETrainingModel

        # vf_feature_dim is unused: RAE has no VF projection (uses_vf_loss is False).
        return RAETrainingModel(
            **kwargs, encoder_model=encoder, disc_ndf=disc_ndf, disc_layers=disc_layers
        )

    def last_layers(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        # The encoder's entry is read only by the VF loss, which RAE never runs.
        return module.decoder.last_layer, module.decoder.last_layer

    def training_view(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None
    ) -> TrainingView:
        module = getattr(model, "module", model)
        posterior = module.encode(x)
        z = posterior.mean
        # rae.py `noising`: sigma = noise_tau * rand per sample, then sigma * randn_like(z).
        sigma = NOISE_TAU * uniform((z.shape[0],), generator, z.device)
        noised = z + sigma.view(-1, 1, 1, 1).to(z.dtype) * normal(z, generator)
        return TrainingView(x, x, module.decode(noised), posterior, None, latent=z)


FAMILY = RAEFamily()
