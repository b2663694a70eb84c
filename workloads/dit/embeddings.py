"""Input and conditioning embeddings of LightningDiT: patches, time, class, positions (sin-cos, RoPE).

The fixed tables are built with torch factory calls, so a model constructed under
`torch.device("meta")` allocates nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens (N, T, D), row-major; timm `PatchEmbed` key layout."""

    def __init__(
        self, input_size: int, patch_size: int, in_channels: int, hidden_size: int
    ) -> None:
        super().__init__()
        if input_size % patch_size != 0:
            raise ValueError(f"input_size={input_size} is not divisible by patch_size={patch_size}")
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sinusoidal_timestep_features(
    t: torch.Tensor, dim: int = 256, max_period: float = 10000.0
) -> torch.Tensor:
    """DiT/GLIDE sinusoidal features (B, dim) of a (B,) time tensor (even dim), in float32.

    The reference concatenates **cos before sin** (GLIDE order, unlike the positional tables) and
    feeds rectified-flow t in [0, 1] **unscaled** (no x1000 as in DDPM-era DiT), so only the
    low-frequency end of the spectrum varies much; both are kept for weight compatibility.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_timestep_features(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with an extra null row (id `num_classes`) for classifier-free guidance.

    In training mode each label is replaced by the null id with probability `dropout_prob`,
    drawn from the global RNG exactly as DiT does.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        # The null row exists only when labels are ever dropped (DiT convention).
        has_null_row = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(has_null_row), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def drop_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null id with probability `dropout_prob`."""
        drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        return torch.where(drop, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.dropout_prob > 0:
            labels = self.drop_labels(labels)
        return self.embedding_table(labels)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[sin(pos * w_i), cos(pos * w_i)] with w_i = 10000^(-i / (dim/2)), in float64."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d_position_table(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (1, grid*grid, dim) in float32, tokens row-major.

    The first half of the channels encodes the **column** and the second half the **row**: the
    reference (MAE/DiT) builds `np.meshgrid(grid_w, grid_h)` and embeds `grid[0]` (the column
    index) first. Built in float64 and rounded once, like the numpy original.
    """
    if dim % 4 != 0:
        raise ValueError(f"the 2-D sin-cos table needs hidden_size divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat(
        [_sincos_1d(dim // 2, cols.reshape(-1)), _sincos_1d(dim // 2, rows.reshape(-1))], dim=1
    )
    return table.float().unsqueeze(0)


class VisionRotaryEmbedding(nn.Module):
    """2-D axial rotary embedding of EVA-02 (`VisionRotaryEmbeddingFast`) for a square token grid.

    The first head_dim/2 channels rotate with the token's **row**, the last head_dim/2 with its
    **column**. Each frequency is repeated twice, so rotation pairs are **interleaved**
    (x[2k], x[2k+1]), not split halves as in GPT-NeoX style RoPE. The cos/sin tables are
    persistent buffers because the released checkpoints contain them.
    """

    def __init__(self, head_dim: int, grid_size: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 4 != 0:
            raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.grid_size = grid_size
        self.theta = theta
        cos, sin = self._tables(head_dim, grid_size, theta)
        self.register_buffer("freqs_cos", cos)
        self.register_buffer("freqs_sin", sin)

    @staticmethod
    def _tables(head_dim: int, grid_size: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
        axis_dim = head_dim // 2
        inv_freq = 1.0 / (theta ** (torch.arange(0, axis_dim, 2).float() / axis_dim))
        # The reference scales positions as arange(n) / n * pt_seq_len with pt_seq_len = n (EVA
        # fine-tuning hook); kept as written so float32 rounding matches for any grid size.
        positions = torch.arange(grid_size) / grid_size * grid_size
        axis_angles = torch.outer(positions, inv_freq).repeat_interleave(2, dim=-1)
        rows = axis_angles[:, None, :].expand(grid_size, grid_size, axis_dim)
        cols = axis_angles[None, :, :].expand(grid_size, grid_size, axis_dim)
        angles = torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, head_dim)
        return angles.cos(), angles.sin()

    def reset_tables(self) -> None:
        """Recompute the buffers in place (after `to_empty()` from the meta device)."""
        cos, sin = self._tables(self.head_dim, self.grid_size, self.theta)
        with torch.no_grad():
            self.freqs_cos.copy_(cos)
            self.freqs_sin.copy_(sin)

    @staticmethod
    def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
        """(x[2k], x[2k+1]) -> (-x[2k+1], x[2k]) along the last dimension."""
        pairs = x.unflatten(-1, (-1, 2))
        first, second = pairs.unbind(-1)
        return torch.stack((-second, first), dim=-1).flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate (B, heads, T, head_dim) queries or keys; the result keeps x's dtype."""
        rotated = x * self.freqs_cos + self.rotate_pairs(x) * self.freqs_sin
        return rotated.type_as(x)
