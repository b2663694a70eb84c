"""The trainable part of VA-VAE: autoencoder + VF projection + discriminator, in one module.

Its state-dict keys are the reference training model's (``vavae/ldm/models/autoencoder.py``) for
these groups: the inference keys, ``linear_proj.weight``, ``loss.discriminator.*`` and
``loss.logvar``. The frozen networks (LPIPS, DINOv2/MAE) are deliberately *not* submodules: they
live in the objective, so a DDP/DeepSpeed wrapper around this module never sees them (the
reference needed ``ddp_find_unused_parameters_true`` because it registered them here).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workloads.vavae.checkpoint import (
    INFERENCE_PREFIXES,
    load_owned_state_dict,
    read_state_dict_file,
)
from workloads.vavae.discriminator import NLayerDiscriminator
from workloads.vavae.model import AutoencoderKL
from workloads.vavae.posterior import DiagonalGaussian
from workloads.vavae.presets import preset_kwargs

TRAINING_PREFIXES = INFERENCE_PREFIXES + ("linear_proj.", "loss.discriminator.", "loss.logvar")


class LossParameters(nn.Module):
    """The trainable state the reference keeps inside its loss module (``loss.*`` keys)."""

    def __init__(self, in_channels: int, disc_ndf: int, disc_layers: int):
        super().__init__()
        self.discriminator = NLayerDiscriminator(in_channels, disc_ndf, disc_layers)
        # The reference's `loss.logvar` is an nn.Parameter(0.0) that no optimizer holds, so it
        # stays 0 for the whole run; a buffer keeps the key (and a loaded value) without making
        # it look trainable to DeepSpeed.
        self.register_buffer("logvar", torch.zeros(()))


class VAVAE(AutoencoderKL):
    """Autoencoder plus ``linear_proj`` (latent -> foundation width) and ``loss.discriminator``.

    ``vf_feature_dim`` is the foundation model's channel count (1024 for DINOv2-L and MAE-L);
    ``None`` builds a plain LDM tokenizer without the VF projection.
    """

    def __init__(
        self,
        vf_feature_dim: int | None = 1024,
        disc_ndf: int = 64,
        disc_layers: int = 3,
        **autoencoder_kwargs: Any,
    ):
        super().__init__(**autoencoder_kwargs)
        self.loss = LossParameters(self.in_channels, disc_ndf, disc_layers)
        if vf_feature_dim is not None:
            # reverse_proj=True (the only variant used): a bias-free 1x1 conv from the latent to
            # the feature width, applied to the *sampled* latent.
            self.linear_proj = nn.Conv2d(self.embed_dim, vf_feature_dim, kernel_size=1, bias=False)
        else:
            self.linear_proj = None

    def fix_projection(self) -> None:
        """Freeze ``linear_proj`` (the reference's ``proj_fix``) by turning its weight into a
        buffer: the key stays ``linear_proj.weight``, no optimizer sees it, and DeepSpeed's
        consolidated checkpoints carry it (they hold buffers, not frozen parameters)."""
        if self.linear_proj is None:
            raise ValueError("proj_fix needs the VF projection (vf_feature_dim is None)")
        weight = self.linear_proj.weight.detach().clone()
        del self.linear_proj.weight
        self.linear_proj.register_buffer("weight", weight)

    def freeze_encoder(self) -> None:
        """Freeze everything that makes the latent (encoder, quant_conv, VF projection) for a
        decoder-only stage; the decoder, post_quant_conv and discriminator keep training."""
        for name, parameter in self.named_parameters():
            if name.startswith(("encoder.", "quant_conv.", "linear_proj.")):
                parameter.requires_grad_(False)

    def load_initial_weights(self, tensors: dict[str, torch.Tensor], source: str) -> list[str]:
        """Start training from another tokenizer (the reference's ``init_weight``): the
        autoencoder strictly; the projection, discriminator and ``logvar`` each strictly when the
        file has that group (a file without them leaves them freshly initialised). Returns the
        groups loaded."""
        load_owned_state_dict(self, tensors, INFERENCE_PREFIXES, source)
        loaded = ["autoencoder"]
        for group in ("linear_proj.", "loss.discriminator.", "loss.logvar"):
            if group == "linear_proj." and self.linear_proj is None:
                continue
            if any(key.startswith(group) for key in tensors):
                load_owned_state_dict(self, tensors, (group,), source)
                loaded.append(group.rstrip("."))
        return loaded

    @property
    def discriminator(self) -> NLayerDiscriminator:
        """The PatchGAN discriminator (``loss.discriminator``)."""
        return self.loss.discriminator

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian, torch.Tensor | None]:
        """Encode, sample, decode; also project the sample for the VF loss (``None`` without VF)."""
        posterior = self.encode(x)
        z = posterior.sample(generator)
        z_proj = None if self.linear_proj is None else self.linear_proj(z)
        return self.decode(z), posterior, z_proj

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the autoencoder optimizer: encoder, decoder, quant convs, projection."""
        for name, parameter in self.named_parameters():
            if not name.startswith("loss."):
                yield parameter

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the discriminator optimizer."""
        return self.loss.discriminator.parameters()

    def export_inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the inference keys (the released tokenizer's 342 for f16d32), detached."""
        return {
            key: value.detach()
            for key, value in self.state_dict().items()
            if key.startswith(INFERENCE_PREFIXES)
        }

    def to_autoencoder(self) -> AutoencoderKL:
        """A standalone inference :class:`AutoencoderKL` with these weights."""
        autoencoder = AutoencoderKL(**self.config)
        autoencoder.load_state_dict(self.export_inference_state_dict(), strict=True)
        return autoencoder.to(next(self.parameters()).device)

    def load_training_weights(self, weights: str | Path | dict[str, torch.Tensor]) -> None:
        """Load autoencoder, projection, discriminator and logvar from a training checkpoint.

        Works with the reference's Lightning checkpoints: their ``loss.perceptual_loss.*`` and
        ``foundation_model.*`` keys are frozen networks held elsewhere and are ignored.
        """
        if isinstance(weights, dict):
            load_owned_state_dict(self, weights, TRAINING_PREFIXES)
        else:
            load_owned_state_dict(
                self, read_state_dict_file(weights), TRAINING_PREFIXES, str(weights)
            )


def build_vavae(preset: str, vf_feature_dim: int | None = 1024, **overrides: Any) -> VAVAE:
    """Build the trainable :class:`VAVAE` of a named preset (see ``vavae_presets``)."""
    return VAVAE(vf_feature_dim=vf_feature_dim, **preset_kwargs(preset, **overrides))
