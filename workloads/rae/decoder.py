"""RAE's pixel decoder: an MAE-style ViT from latent tokens to image patches.

Source: bytetriper/RAE@a4d18c4 src/stage1/decoders/decoder.py (`GeneralDecoder`, a ViT-MAE
decoder) with configs/decoder/ViTXL/config.json (28 layers, width 1152, 16 heads, MLP 4096,
LayerNorm eps 1e-12) and src/stage1/rae.py (`decode`: unpatchify, then de-normalise with the
encoder's ImageNet mean/std). Module names follow `GeneralDecoder`'s where they have one; the
transformer blocks are timm's pre-norm `Block`, the same computation as HF's `ViTMAELayer`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from workloads.foundation import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

# configs/decoder/ViTXL/config.json: "layer_norm_eps": 1e-12 (blocks and the final norm).
LAYER_NORM_EPS = 1e-12


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding (`get_1d_sincos_pos_embed_from_grid`): (M,) -> (M, dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos embedding of a grid x grid token map, row-major: (grid^2, dim).

    As `get_2d_sincos_pos_embed`, the first half of the channels encodes the column index (its
    `np.meshgrid(grid_w, grid_h)` puts w first) and the second half the row index; computed in
    float64 like its numpy code, then cast to float32.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    embedding = torch.cat(
        [sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1
    )
    return embedding.float()


class ViTDecoder(nn.Module):
    """Latents (B, latent_dim, grid, grid) -> images (B, 3, grid * patch, grid * patch) in [-1, 1].

    Defaults are RAE's ViT-XL decoder. Parameters use PyTorch's default initialisation, as
    `GeneralDecoder` (a plain nn.Module, never given HF's `_init_weights`) does, except the CLS
    token, which starts at 0 (`set_trainable_cls_token`).
    """

    def __init__(
        self,
        latent_dim: int,
        grid: int,
        patch_size: int = 16,
        width: int = 1152,
        depth: int = 28,
        heads: int = 16,
        mlp_dim: int = 4096,
    ):
        # Here, not at module import: timm pulls in torchvision and torch._dynamo.
        from timm.models.vision_transformer import Block

        super().__init__()
        self.grid = grid
        self.patch_size = patch_size
        self.decoder_embed = nn.Linear(latent_dim, width)
        # RAE keeps MAE's CLS token position: a trainable token, attended to and then dropped.
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, width))
        # Fixed (requires_grad=False in RAE) and a function of the config, so not checkpointed;
        # the CLS position's embedding is 0 (`add_cls_token=True`).
        pos_embed = torch.cat([torch.zeros(1, width), sincos_2d(width, grid)])
        self.register_buffer("decoder_pos_embed", pos_embed[None], persistent=False)
        norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)
        self.decoder_layers = nn.ModuleList(
            Block(
                width,
                heads,
                # timm sizes the MLP as int(width * mlp_ratio); the half keeps float rounding
                # from landing one below mlp_dim.
                mlp_ratio=(mlp_dim + 0.5) / width,
                qkv_bias=True,  # ViTMAE config: "qkv_bias": true
                norm_layer=norm,
            )
            for _ in range(depth)
        )
        self.decoder_norm = norm(width)
        self.decoder_pred = nn.Linear(width, patch_size**2 * 3)
        # rae.py `decode`: the decoder predicts the encoder's ImageNet-normalised input.
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN)[None, :, None, None]
        std = torch.tensor(IMAGENET_DEFAULT_STD)[None, :, None, None]
        self.register_buffer("imagenet_mean", mean, persistent=False)
        self.register_buffer("imagenet_std", std, persistent=False)

    @property
    def last_layer(self) -> torch.Tensor:
        """The output projection's weight (where the adaptive GAN weight compares gradients)."""
        return self.decoder_pred.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or tuple(z.shape[-2:]) != (self.grid, self.grid):
            raise ValueError(
                f"the ViT decoder takes (B, C, {self.grid}, {self.grid}) latents, got "
                f"{tuple(z.shape)}"
            )
        batch = z.shape[0]
        tokens = self.decoder_embed(z.flatten(2).transpose(1, 2))
        cls = self.trainable_cls_token.expand(batch, -1, -1)
        hidden = torch.cat([cls, tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_layers:
            hidden = block(hidden)
        patches = self.decoder_pred(self.decoder_norm(hidden))[:, 1:]
        # `unpatchify`: each token's outputs are ordered (row in patch, column in patch, channel).
        p, g = self.patch_size, self.grid
        patches = patches.reshape(batch, g, g, p, p, 3)
        image = torch.einsum("nhwpqc->nchpwq", patches).reshape(batch, 3, g * p, g * p)
        x01 = image * self.imagenet_std + self.imagenet_mean
        return 2.0 * x01 - 1.0  # [0, 1] -> the tokenizers' [-1, 1]
