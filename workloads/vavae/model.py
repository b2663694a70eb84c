"""The VA-VAE tokenizer: LDM's KL autoencoder (encoder, decoder, 1x1 quant convs).

Module names and registration order follow ``tokenizer/autoencoder.py`` of hustvl/LightningDiT,
so the state dict is the released checkpoint's (342 entries for f16d32).
"""

from collections.abc import Sequence

import torch
from torch import nn

from workloads.vavae.blocks import (
    AttnBlock,
    Downsample,
    ResnetBlock,
    Upsample,
    group_norm,
    swish,
)
from workloads.vavae.inputs import validate_images
from workloads.vavae.posterior import DiagonalGaussian


class MidBlock(nn.Module):
    """ResBlock -> attention -> ResBlock at the lowest resolution."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: ResBlocks, each followed by attention where the level has it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        with_attention: bool,
        dropout: float,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for index in range(num_blocks):
            self.block.append(
                ResnetBlock(in_channels if index == 0 else out_channels, out_channels, dropout)
            )
            if with_attention:
                self.attn.append(AttnBlock(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[index](x)
        return x


class EncoderLevel(Level):
    """A :class:`Level` followed by ``downsample`` on every level but the last."""

    def __init__(self, *args, with_downsample: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.downsample = Downsample(self.out_channels) if with_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.downsample is None else self.downsample(x)


class DecoderLevel(Level):
    """A :class:`Level` followed by ``upsample`` on every level but the first."""

    def __init__(self, *args, with_upsample: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.upsample = Upsample(self.out_channels) if with_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> (B, 2*z_channels, H/f, W/f) moments, f = 2**(levels-1)."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        in_channels: int,
        z_channels: int,
        double_z: bool,
        dropout: float,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        channels = ch
        for level, mult in enumerate(ch_mult):
            # Attention placement uses the *nominal* resolution from the config, whatever the
            # actual input size (the reference tracks `curr_res` from `resolution` the same way).
            nominal_resolution = resolution // 2**level
            self.down.append(
                EncoderLevel(
                    channels,
                    ch * mult,
                    num_res_blocks,
                    nominal_resolution in attn_resolutions,
                    dropout,
                    with_downsample=level != len(ch_mult) - 1,
                )
            )
            channels = ch * mult
        self.mid = MidBlock(channels, dropout)
        self.norm_out = group_norm(channels)
        out_channels = 2 * z_channels if double_z else z_channels
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f); no output activation."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        resolution: int,
        out_ch: int,
        z_channels: int,
        dropout: float,
    ):
        super().__init__()
        num_levels = len(ch_mult)
        channels = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, channels, kernel_size=3, padding=1)
        self.mid = MidBlock(channels, dropout)
        # Built from the lowest resolution up, but stored by level index so that `up.{i}` names
        # resolution level i, as the reference does with `self.up.insert(0, ...)`.
        stages: list[DecoderLevel] = []
        for level in reversed(range(num_levels)):
            nominal_resolution = resolution // 2**level
            stages.insert(
                0,
                DecoderLevel(
                    channels,
                    ch * ch_mult[level],
                    # The decoder has one more ResBlock per level than the encoder (LDM design).
                    num_res_blocks + 1,
                    nominal_resolution in attn_resolutions,
                    dropout,
                    with_upsample=level != 0,
                ),
            )
            channels = ch * ch_mult[level]
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, out_ch, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
        # No tanh: outputs may leave [-1, 1]; callers clamp when converting to pixels.
        return self.conv_out(swish(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """VA-VAE / LDM KL autoencoder. Defaults are the released f16d32 tokenizer.

    ``encode(x)`` maps images in [-1, 1] to a :class:`DiagonalGaussian` over
    (B, embed_dim, H/f, W/f) latents; ``decode(z)`` maps latents back to images.
    """

    def __init__(
        self,
        embed_dim: int = 32,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        resolution: int = 256,
        in_channels: int = 3,
        out_ch: int = 3,
        z_channels: int | None = None,
        double_z: bool = True,
        dropout: float = 0.0,
        decoder_attn_resolutions: Sequence[int] | None = None,
    ):
        super().__init__()
        if not double_z:
            raise ValueError("AutoencoderKL needs double_z=True: the encoder emits mean and logvar")
        z_channels = embed_dim if z_channels is None else z_channels
        # Constructor arguments, so an inference model can be rebuilt from a training one.
        self.config = {
            "embed_dim": embed_dim,
            "ch": ch,
            "ch_mult": tuple(ch_mult),
            "num_res_blocks": num_res_blocks,
            "attn_resolutions": tuple(attn_resolutions),
            "resolution": resolution,
            "in_channels": in_channels,
            "out_ch": out_ch,
            "z_channels": z_channels,
            "double_z": double_z,
            "dropout": dropout,
            "decoder_attn_resolutions": (
                None if decoder_attn_resolutions is None else tuple(decoder_attn_resolutions)
            ),
        }
        self.embed_dim = embed_dim
        self.in_channels = in_channels
        self.ch_mult = tuple(ch_mult)
        self.encoder = Encoder(
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            resolution=resolution,
            in_channels=in_channels,
            z_channels=z_channels,
            double_z=double_z,
            dropout=dropout,
        )
        self.decoder = Decoder(
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            # MAR's KL-16 has encoder attention at 16 and none in its decoder's levels.
            attn_resolutions=(
                attn_resolutions if decoder_attn_resolutions is None else decoder_attn_resolutions
            ),
            resolution=resolution,
            out_ch=out_ch,
            z_channels=z_channels,
            dropout=dropout,
        )
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, kernel_size=1)

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction from image to latent (16 for the paper's tokenizers)."""
        return 2 ** (len(self.ch_mult) - 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (B, C, H, W) in [-1, 1] -> posterior over (B, embed_dim, H/f, W/f)."""
        validate_images(x, self.in_channels, self.downsample_factor)
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, embed_dim, h, w) -> images (B, out_ch, h*f, w*f)."""
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Encode, draw a posterior sample (as in training and latent extraction), decode."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior
