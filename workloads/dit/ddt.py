"""DiT^DH: a LightningDiT trunk with a wide, shallow "DDT" head (RAE, arXiv 2510.11690).

A re-implementation of bytetriper/RAE@a4d18c4 `src/stage2/models/DDT.py::DiTwDDTHead`, checked
against `ditdh_tiny_parity.*`: state-dict keys, shapes and numerics equal the reference.

* Trunk: `s = s_embedder(x) + pos_embed` through `depth[0]` LightningDiT blocks of width
  `hidden[0]`, conditioned on `c = silu(t_emb + y_emb)` (note the SiLU, unlike LightningDiT's
  `t_emb + y_emb`); then `s = silu(t_emb + s)` per token.
* Head: `s_projector` (Linear hidden[0] -> hidden[1]) maps s to the head width; the head
  re-embeds the noisy x (`x_embedder`, no position table) and runs `depth[1]` blocks of width
  `hidden[1]` whose adaLN condition is s **per token**; the final layer is modulated per token.
* Time embedding: Gaussian Fourier features `mlp(cat(sin(2 pi t W), cos(2 pi t W)))`, W ~ N(0,1)
  of size 256, fixed.

Time convention. RAE's path is x_t = (1 - t) x + t eps (**t = 1 is noise**), the reverse of
LightningDiT's, and its velocity target is eps - x. `velocity_rae` is the reference network in
RAE's convention (what the parity vectors and released RAE weights use); `forward` presents it
in this repository's convention (t = 0 noise, velocity x - eps, see `workloads.dit.objective`):
v(x, t) = -v_rae(x, 1 - t). So released DiT^DH weights sample with our samplers unchanged, and
a model trained here learns the same function a RAE run would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workloads.dit.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    VisionRotaryEmbedding,
    sincos_2d_position_table,
)
from workloads.dit.model import FinalLayer, LightningDiT, LightningDiTBlock


class GaussianFourierEmbedding(nn.Module):
    """RAE's time embedding: fixed random frequencies W (256,), sin before cos, then an MLP.

    W is a persistent buffer (the reference's frozen `nn.Parameter` under the same key
    `t_embedder.W`): DeepSpeed checkpoints keep buffers but not frozen parameters, and unlike a
    sin-cos table W cannot be recomputed, so a parameter would come back re-drawn after a resume.
    """

    def __init__(self, hidden_size: int, embedding_size: int = 256) -> None:
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size))
        self.mlp = nn.Sequential(
            nn.Linear(2 * embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # The reference multiplies in this order: t * W * 2 * pi (float rounding follows it).
        angles = t.float()[:, None] * self.W[None, :] * 2 * torch.pi
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class PerTokenBlock(LightningDiTBlock):
    """A head block: the same layers, with the adaLN condition given per token (B, T, D)."""

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, rope: VisionRotaryEmbedding | None
    ) -> torch.Tensor:
        chunks = self.adaLN_modulation(c).chunk(4 if self.wo_shift else 6, dim=-1)
        if self.wo_shift:
            (scale_msa, gate_msa, scale_mlp, gate_mlp), shift_msa, shift_mlp = chunks, None, None
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks
        x = x + gate_msa * self.attn(_modulate_tokens(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp * self.mlp(_modulate_tokens(self.norm2(x), shift_mlp, scale_mlp))


class PerTokenFinalLayer(FinalLayer):
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate_tokens(self.norm_final(x), shift, scale))


def _modulate_tokens(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor
) -> torch.Tensor:
    scaled = x * (1 + scale)
    return scaled if shift is None else scaled + shift


class DiTDH(LightningDiT):
    """LightningDiT trunk (`hidden_size`, `depth`, `num_heads`) + DDT head (`head_width`,
    `head_depth`, `head_heads`). Patch size 1 only (the reference's x and s embedders then agree;
    RAE uses 1 throughout). No learned variance (rectified flow only)."""

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 1,
        in_channels: int = 768,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        head_width: int = 2048,
        head_depth: int = 2,
        head_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        use_qknorm: bool = False,
        use_swiglu: bool = True,
        use_rope: bool = True,
        use_rmsnorm: bool = True,
        wo_shift: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        if patch_size != 1:
            raise ValueError(f"DiT^DH supports patch_size 1 only, got {patch_size}")
        if learn_sigma:
            raise ValueError("DiT^DH has no learned variance (learn_sigma must be False)")
        if head_width % head_heads:
            raise ValueError(f"head width {head_width} is not divisible by {head_heads} heads")
        nn.Module.__init__(self)
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.hidden_size = hidden_size
        self.head_width = head_width
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = False
        self.use_rope = use_rope
        self.use_checkpoint = use_checkpoint
        self.check_label_range = True
        # Registration order = the reference's state-dict order.
        self.x_embedder = PatchEmbed(input_size, 1, in_channels, head_width)
        self.s_embedder = PatchEmbed(input_size, 1, in_channels, hidden_size)
        self.s_projector = (
            nn.Linear(hidden_size, head_width) if hidden_size != head_width else nn.Identity()
        )
        self.t_embedder = GaussianFourierEmbedding(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.final_layer = PerTokenFinalLayer(head_width, 1, in_channels, use_rmsnorm)
        grid_size = self.x_embedder.grid_size
        self.pos_embed = nn.Parameter(
            torch.zeros(1, grid_size * grid_size, hidden_size), requires_grad=False
        )
        if use_rope:
            self.enc_feat_rope = VisionRotaryEmbedding(hidden_size // num_heads, grid_size)
            self.dec_feat_rope = VisionRotaryEmbedding(head_width // head_heads, grid_size)
        else:
            self.enc_feat_rope = self.dec_feat_rope = None
        flags = (mlp_ratio, use_qknorm, use_swiglu, use_rmsnorm, wo_shift)
        self.num_trunk_blocks = depth
        self.blocks = nn.ModuleList(
            [LightningDiTBlock(hidden_size, num_heads, *flags) for _ in range(depth)]
            + [PerTokenBlock(head_width, head_heads, *flags) for _ in range(head_depth)]
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The reference's init: default PyTorch Linears (its xavier option is off), patch convs
        xavier as Linears, N(0, 0.02) labels and time MLP, zero adaLN and output layer."""
        for embedder in (self.x_embedder, self.s_embedder):
            weight = embedder.proj.weight.data
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
            nn.init.zeros_(embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        self.reset_fixed_tables()
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def reset_fixed_tables(self) -> None:
        table = sincos_2d_position_table(self.hidden_size, self.x_embedder.grid_size)
        with torch.no_grad():
            self.pos_embed.copy_(table)
        for rope in (self.enc_feat_rope, self.dec_feat_rope):
            if rope is not None:
                rope.reset_tables()

    # ------------------------------------------------------------------ forward passes

    def trunk(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The head's per-token condition silu(t_emb + s) (B, T, hidden), RAE time."""
        t_emb = self.t_embedder(t)
        c = F.silu(t_emb + self.y_embedder(y, self.training))
        s = self.s_embedder(x) + self.pos_embed
        for block in self.blocks[: self.num_trunk_blocks]:
            s = self._run(block, s, c, self.enc_feat_rope)
        return F.silu(t_emb.unsqueeze(1) + s)

    def velocity_rae(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The reference network: RAE time (t = 1 noise), velocity eps - x."""
        self.check_inputs(x, t, y)
        s = self.s_projector(self.trunk(x, t, y))
        tokens = self.x_embedder(x)
        for block in self.blocks[self.num_trunk_blocks :]:
            tokens = self._run(block, tokens, s, self.dec_feat_rope)
        return self.unpatchify(self.final_layer(tokens, s))

    def _run(self, block, tokens, c, rope):
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, tokens, c, rope, use_reentrant=False)
        return block(tokens, c, rope)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, variance: bool = False
    ) -> torch.Tensor:
        """Velocity in this repository's convention (t = 0 noise): -v_rae(x, 1 - t)."""
        return -self.velocity_rae(x, 1 - t, y)

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        cfg_interval_start: float = 0.0,
        cfg_channels: int | None = None,
        variance: bool = False,
    ) -> torch.Tensor:
        """Guided velocity on the doubled batch [cond; uncond] (see `LightningDiT.forward_with_cfg`).

        RAE guides all channels (`cfg_channels=None`) and tests the interval per sample: guided
        where t >= `cfg_interval_start` here, i.e. RAE's t <= 1 - start (its `cfg_interval`
        (0, 0.7) is start 0.3).
        """
        if x.shape[0] % 2 != 0:
            raise ValueError(
                f"forward_with_cfg needs an even batch [cond; uncond], got {x.shape[0]}"
            )
        half = x[: x.shape[0] // 2]
        out = self(torch.cat([half, half], dim=0), t, y)
        num_guided = out.shape[1] if cfg_channels is None else cfg_channels
        guided_part, rest = out[:, :num_guided], out[:, num_guided:]
        cond, uncond = guided_part.chunk(2, dim=0)
        on = (t[: cond.shape[0]] >= cfg_interval_start).view(-1, 1, 1, 1)
        guided = torch.where(on, uncond + cfg_scale * (cond - uncond), cond)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


def dimension_shift(channels: int, height: int, width: int, base: int = 4096) -> float:
    """RAE's dimension-dependent time shift sqrt(C*H*W / base) (src/train.py L137-139: 6.93 for
    768x16x16). In RAE's time it maps t -> s t / (1 + (s - 1) t); in ours (t = 0 noise) the same
    map is the LightningDiT `timestep_shift` 1/s."""
    return math.sqrt(channels * height * width / base)


__all__ = ["DiTDH", "GaussianFourierEmbedding", "dimension_shift"]
