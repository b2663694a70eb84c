"""RAE, the representation autoencoder: a frozen DINOv2 encoder and a trained ViT decoder.

Source: bytetriper/RAE@a4d18c4 src/stage1/rae.py (`encode`, `decode`),
src/stage1/encoders/dinov2.py (`Dinov2withNorm`), configs/stage1/training/DINOv2-B_decXL.yaml.
The encoder is a timm ViT (`vit_base_patch14_reg4_dinov2.lvd142m` for the paper's DINOv2-B with
4 registers) inside a `FoundationModel`: bicubic resize to grid x patch (224 px for a 16 x 16
grid), ImageNet normalisation, final LayerNorm without weight and bias, CLS and register tokens
dropped. Its latent is the (B, C, grid, grid) map of the remaining patch tokens, deterministic.

The encoder's weights are *buffers* here (same keys): no optimizer sees them, DeepSpeed neither
trains nor partitions them, and the checkpoints and the inference export carry them, so a stage
that builds `RAE(**config)` and loads the export strictly has the encoder the decoder was
trained on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from workloads.foundation import RANDOM_INIT, FoundationModel
from workloads.rae.decoder import ViTDecoder
from workloads.vavae.discriminator import NLayerDiscriminator
from workloads.vavae.inputs import validate_images
from workloads.vavae.training_model import LossParameters

INFERENCE_PREFIXES = ("encoder.", "decoder.")
# How RAE builds its encoder's `FoundationModel`: rae.py `encode` resizes with
# F.interpolate(..., mode='bicubic', align_corners=False); DINOv2-B_decXL.yaml
# `encoder_params.normalize: true` drops the final LayerNorm's affine.
ENCODER_OPTIONS = {"resize": "bicubic", "affine_norm": False}


class PointPosterior:
    """A deterministic latent in the posterior interface of `DiagonalGaussian`: every draw is
    the mean and the KL term is 0, so the shared objective's KL weight has nothing to act on."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    @property
    def std(self) -> torch.Tensor:
        """Zero: code that samples as mean + std * noise gets the mean."""
        return torch.zeros_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """Zeros of shape (B,)."""
        return self.mean.new_zeros(self.mean.shape[0])


def parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter of `module` into a persistent buffer of the same name and value
    (as `VAVAE.fix_projection` does for one weight)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is None:  # e.g. a Linear built with bias=False
                continue
            del submodule._parameters[name]
            submodule.register_buffer(name, parameter.detach())


def check_encoder(encoder: FoundationModel, spec: dict) -> None:
    """Raise ValueError unless a built encoder is the one `spec` describes, with RAE's input
    resize and non-affine final norm."""
    wanted = (
        ("timm_name", encoder.timm_name, spec["timm_name"]),
        ("input_norm", encoder.input_norm, spec["input_norm"]),
        *((name, getattr(encoder, name), value) for name, value in ENCODER_OPTIONS.items()),
    )
    wrong = [f"{what} {got!r} (expected {want!r})" for what, got, want in wanted if got != want]
    if wrong:
        raise ValueError("the given RAE encoder does not match its spec: " + "; ".join(wrong))


class RAE(nn.Module):
    """The inference tokenizer: `encode(x)` -> `PointPosterior` over (B, embed_dim, grid, grid),
    `decode(z)` -> images (B, 3, grid * f, grid * f) in [-1, 1], f = the decoder's patch size.

    `encoder`: {"timm_name", "timm_kwargs", "input_norm"} of the frozen encoder, built with
    random weights (stages load an export over it strictly) unless `encoder_model`, a built
    `FoundationModel` of that spec with real weights, is given. `decoder`: `ViTDecoder` keywords
    besides `latent_dim` and `grid`. `embed_dim` must be the encoder's width.
    """

    def __init__(
        self,
        encoder: dict,
        grid: int,
        decoder: dict,
        embed_dim: int,
        *,
        encoder_model: FoundationModel | None = None,
    ):
        super().__init__()
        # Constructor arguments, so an inference model can be rebuilt from a training one.
        self.config = {
            "encoder": copy.deepcopy(encoder),
            "grid": grid,
            "decoder": copy.deepcopy(decoder),
            "embed_dim": embed_dim,
        }
        if encoder_model is None:
            encoder_model = FoundationModel(
                encoder["timm_name"],
                weights=RANDOM_INIT,
                timm_kwargs=encoder["timm_kwargs"],
                input_norm=encoder["input_norm"],
                **ENCODER_OPTIONS,
            )
        else:
            check_encoder(encoder_model, encoder)
        if encoder_model.embed_dim != embed_dim:
            raise ValueError(
                f"RAE encoder {encoder['timm_name']} gives {encoder_model.embed_dim} channels "
                f"but embed_dim is {embed_dim}"
            )
        parameters_to_buffers(encoder_model)
        self.encoder = encoder_model
        self.grid = grid
        self.embed_dim = embed_dim
        self.decoder = ViTDecoder(embed_dim, grid, **decoder)

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent cell: the decoder's patch size (16 for the paper's RAE)."""
        return self.decoder.patch_size

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> PointPosterior:
        """Images (B, 3, grid * f, grid * f) in [-1, 1] -> the frozen encoder's latent."""
        validate_images(x, 3, self.downsample_factor)
        size = self.grid * self.downsample_factor
        if tuple(x.shape[-2:]) != (size, size):
            # The decoder's output size is fixed by the grid: other inputs could not be scored.
            raise ValueError(
                f"this RAE encodes {size}x{size} images (a {self.grid}x{self.grid} grid of "
                f"{self.downsample_factor} px cells), got {x.shape[-2]}x{x.shape[-1]}"
            )
        return PointPosterior(self.encoder(x, grid=(self.grid, self.grid)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class RAETrainingModel(RAE):
    """RAE plus `loss.discriminator` and `loss.logvar` (the keys `VAVAE` has), trained by the
    shared objective: only the decoder and the discriminator have parameters."""

    def __init__(
        self,
        encoder: dict,
        grid: int,
        decoder: dict,
        embed_dim: int,
        *,
        encoder_model: FoundationModel | None = None,
        disc_ndf: int = 64,
        disc_layers: int = 3,
    ):
        super().__init__(encoder, grid, decoder, embed_dim, encoder_model=encoder_model)
        self.loss = LossParameters(3, disc_ndf, disc_layers)
        # No VF projection: a frozen encoder cannot be aligned.
        self.linear_proj = None

    @property
    def discriminator(self) -> NLayerDiscriminator:
        return self.loss.discriminator

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, PointPosterior, None]:
        """The plain step (a decoder-only stage's): decode the clean latent."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior, None

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The decoder's parameters (the encoder has none)."""
        return self.decoder.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return self.loss.discriminator.parameters()

    def freeze_encoder(self) -> None:
        """Nothing to do: the encoder is always frozen."""

    def export_inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the `RAE` keys (encoder buffers and decoder), detached."""
        return {
            key: value.detach()
            for key, value in self.state_dict().items()
            if key.startswith(INFERENCE_PREFIXES)
        }
