"""What a tokenizer family is: how one training step turns a batch of images into the
(reconstruction, target) pair the shared VA-VAE objective scores.

Every family trains with the same objective (L1 + LPIPS + KL + adaptive GAN, optionally the VF
loss); a family changes the training *view* (what is encoded, which latent is decoded and which
image the reconstruction is compared with) and, where it has its own networks (RAE's frozen
encoder and ViT decoder), the models it builds. Every stage builds a tokenizer only through
`inference_model` / `training_model`, from the family's constructor keywords, so the stages
downstream of tokenizer training need no family-specific code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # workloads.vavae imports this module (its objective takes a family)
    from workloads.vavae.posterior import DiagonalGaussian


@dataclass
class TrainingView:
    """One step's tensors: `image` is what the encoder saw (the VF target features are computed
    on it), `target` what the reconstruction is scored against, `posterior` the encoder's output
    (KL), `z_proj` the projected latent for the VF loss (None without VF)."""

    image: torch.Tensor
    target: torch.Tensor
    reconstruction: torch.Tensor
    posterior: DiagonalGaussian
    z_proj: torch.Tensor | None
    # The sampled latent, for families whose extra loss reads it (REPA-E).
    latent: torch.Tensor | None = None


@dataclass(frozen=True)
class TokenizerSpec:
    """What every stage needs to build the point's inference tokenizer: its family and the
    family's constructor keywords (plain values, so stage plans ship it to Ray actors)."""

    family: str
    kwargs: dict

    def build(self, weights: str | Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """The inference tokenizer in eval mode; exported weights (a file or a state dict) are
        loaded strictly when given."""
        from workloads.families import get_family
        from workloads.vavae.checkpoint import load_autoencoder_weights

        model = get_family(self.family).inference_model(self.kwargs)
        if weights is not None:
            load_autoencoder_weights(model, weights)
        return model.eval()


def uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """U(0, 1) draws from `generator` (which may live on another device), moved to `device`."""
    rng_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=rng_device).to(device)


def normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) draws shaped like `like` from `generator` (which may live on another device)."""
    rng_device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=rng_device, dtype=like.dtype).to(
        like.device
    )


class TokenizerFamily:
    """Base family: the plain VA-VAE / LDM step (encode, sample, decode, compare with x).

    `name` is the config value (`tokenizer.family`), `source` the authors' code the defaults come
    from. `decoder_only` is True in a `tokenizer.stages[*].train: decoder` stage: the encoder is
    frozen there and a family's training-only augmentations are off.
    """

    name = "vavae"
    source = "hustvl/LightningDiT@2725fed:vavae/ldm/models/autoencoder.py"
    # Whether `tokenizer.vf` configures a VF loss (else the foundation model is the family's own
    # target, REPA-E's), whether the objective must compute foundation features for
    # `extra_loss`, and whether the GAN weight is taming's adaptive one (else `disc_weight`).
    uses_vf_loss = True
    needs_features = False
    adaptive_gan = True
    # L1 + LPIPS as pixel means (REPA-E) instead of LDM's sum over pixels.
    mean_reconstruction = False
    # A frozen, deterministic encoder (RAE): the latent cache stores its output only (no
    # logvar), and generator workers may run it themselves (`cache.mode: on_the_fly`).
    frozen_encoder = False
    # Latent statistics per (C, H, W) position instead of per channel (RAE's `stat.pt`: a ViT's
    # tokens differ by position, which a per-channel mean and std would blur).
    position_stats = False
    # `FoundationModel` options of the family's foundation model (RAE's encoder: bicubic input
    # resize, final LayerNorm without affine).
    foundation_options: dict = {}

    def inference_model(self, kwargs: dict) -> nn.Module:
        """The inference tokenizer (random weights; stages then load an export strictly):
        `encode(x)` -> posterior (`.mean`, `.sample`), `decode(z)`, `downsample_factor`."""
        from workloads.vavae import AutoencoderKL

        return AutoencoderKL(**kwargs)

    def training_model(
        self,
        kwargs: dict,
        *,
        vf_feature_dim: int | None,
        disc_ndf: int,
        disc_layers: int,
        encoder: nn.Module | None = None,
    ) -> nn.Module:
        """The trainable tokenizer (the objective's `model`): inference model + VF projection +
        `loss.discriminator`. `encoder`: a built frozen encoder, for families that have one."""
        from workloads.vavae import VAVAE

        return VAVAE(
            vf_feature_dim=vf_feature_dim, disc_ndf=disc_ndf, disc_layers=disc_layers, **kwargs
        )

    def last_layers(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder, decoder) last-layer weights where the adaptive VF and GAN weights compare
        gradient norms."""
        return module.encoder.conv_out.weight, module.decoder.conv_out.weight

    def build_extra(self, dit: nn.Module, feature_dim: int) -> nn.Module | None:
        """Training-only networks the family trains alongside the tokenizer (None: none). The
        module's `latent_stats()` are exported as the latent cache's statistics, and the family's
        `extra_betas` are its param group's Adam betas."""
        return None

    def extra_loss(
        self,
        extra: nn.Module,
        view: TrainingView,
        features: torch.Tensor | None,
        labels: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the `build_extra` networks (added to the tokenizer's; disjoint grads)."""
        raise NotImplementedError(f"{self.name} has no extra networks")

    def view(
        self,
        model: nn.Module,
        x: torch.Tensor,
        generator: torch.Generator | None,
        decoder_only: bool = False,
    ) -> TrainingView:
        """The step's view; a decoder-only stage trains the plain step in every family (its
        training-only augmentations are off there)."""
        if decoder_only:
            return TokenizerFamily.training_view(self, model, x, generator)
        return self.training_view(model, x, generator)

    def training_view(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None
    ) -> TrainingView:
        """The family's own view (augmentations included): here the plain VA-VAE step."""
        reconstruction, posterior, z_proj = model(x, generator)
        return TrainingView(x, x, reconstruction, posterior, z_proj)
