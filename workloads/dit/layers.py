"""Transformer building blocks of LightningDiT: norms, feed-forward nets, attention, adaLN.

Module and attribute names are chosen so that state-dict keys equal the reference
(hustvl/LightningDiT, models/lightningdit.py, models/swiglu_ffn.py, models/rmsnorm.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable per-feature gain (LLaMA style)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The statistic is computed in float32 and cast back before the gain, as the reference does;
        # under bf16 autocast the gain multiply then promotes the result to float32.
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def token_norm(dim: int, use_rmsnorm: bool) -> nn.Module:
    """The norm in front of attention, MLP and the output layer.

    Without RMSNorm this is DiT's LayerNorm with no affine parameters, so it adds no state-dict keys.
    """
    if use_rmsnorm:
        return RMSNorm(dim, eps=1e-6)
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


def swiglu_hidden_features(hidden_size: int, mlp_ratio: float) -> int:
    """SwiGLU width: two thirds of the plain MLP width, so parameters stay about equal.

    Evaluated with exactly the reference's float expression `int(2 / 3 * int(D * ratio))`, whose
    truncation decides the weight shapes (3072 for XL, 170 for a width-64 model).
    """
    return int(2 / 3 * int(hidden_size * mlp_ratio))


class SwiGLUFFN(nn.Module):
    """w3(silu(x1) * x2) with (x1, x2) = w12(x).chunk(2); both projections carry a bias."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=True)
        self.w3 = nn.Linear(hidden_features, in_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class GeluMlp(nn.Module):
    """DiT's MLP (timm `Mlp` layout: keys `fc1`, `fc2`) with tanh-approximated GELU."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=True)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def qk_norm_layer(head_dim: int, use_rmsnorm: bool) -> nn.Module:
    """Per-head norm for the optional QK-norm."""
    if use_rmsnorm:
        return RMSNorm(head_dim, eps=1e-6)
    # The reference passes timm's default `nn.LayerNorm` here: affine, and eps 1e-5 (not 1e-6).
    return nn.LayerNorm(head_dim)


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` (scale head_dim^-0.5)."""

    def __init__(self, dim: int, num_heads: int, use_qknorm: bool, use_rmsnorm: bool) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden_size={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = qk_norm_layer(self.head_dim, use_rmsnorm) if use_qknorm else nn.Identity()
        self.k_norm = qk_norm_layer(self.head_dim, use_rmsnorm) if use_qknorm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(
        self, x: torch.Tensor, rope: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # timm layout of the fused projection: (3, heads, head_dim) along the output features.
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            # RoPE acts after the optional QK-norm, on q and k only.
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x * (1 + scale) + shift, broadcast over tokens; `shift=None` for wo_shift."""
    scaled = x * (1 + scale.unsqueeze(1))
    if shift is None:
        return scaled
    return scaled + shift.unsqueeze(1)
