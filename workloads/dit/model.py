"""LightningDiT: DiT with adaLN-Zero plus SwiGLU, RMSNorm, 2-D RoPE and QK-norm options.

A faithful re-implementation of hustvl/LightningDiT `models/lightningdit.py` (arXiv 2501.01423):
state-dict keys, shapes and numerics equal the reference (checked against its parity vectors).
The module is plain PyTorch: no `.cuda()`, no `@torch.compile`, no distributed code. Compilation,
activation checkpointing, DDP/DeepSpeed wrapping and autocast are applied from outside.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from workloads.dit.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    VisionRotaryEmbedding,
    sincos_2d_position_table,
)
from workloads.dit.layers import (
    Attention,
    GeluMlp,
    SwiGLUFFN,
    modulate,
    swiglu_hidden_features,
    token_norm,
)


class LightningDiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        use_qknorm: bool,
        use_swiglu: bool,
        use_rmsnorm: bool,
        wo_shift: bool,
    ) -> None:
        super().__init__()
        self.wo_shift = wo_shift
        self.norm1 = token_norm(hidden_size, use_rmsnorm)
        self.norm2 = token_norm(hidden_size, use_rmsnorm)
        self.attn = Attention(hidden_size, num_heads, use_qknorm, use_rmsnorm)
        if use_swiglu:
            self.mlp = SwiGLUFFN(hidden_size, swiglu_hidden_features(hidden_size, mlp_ratio))
        else:
            self.mlp = GeluMlp(hidden_size, int(hidden_size * mlp_ratio))
        num_chunks = 4 if wo_shift else 6
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, num_chunks * hidden_size, bias=True)
        )

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, rope: VisionRotaryEmbedding | None
    ) -> torch.Tensor:
        if self.wo_shift:
            scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            shift_msa = shift_mlp = None
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
                c
            ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(self.norm1(x), shift_msa, scale_msa), rope=rope
        )
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """Norm -> adaLN (shift, scale) -> Linear to p*p*out_channels per token."""

    def __init__(
        self, hidden_size: int, patch_size: int, out_channels: int, use_rmsnorm: bool
    ) -> None:
        super().__init__()
        self.norm_final = token_norm(hidden_size, use_rmsnorm)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        # Always shift and scale: the reference's `wo_shift` only applies to the blocks.
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class LightningDiT(nn.Module):
    """Class-conditional latent velocity model v(x_t, t, y).

    Defaults are the released ImageNet-256 model (LightningDiT-XL/1 on VA-VAE f16d32 latents:
    16x16x32 inputs, SwiGLU + RoPE + RMSNorm, no QK-norm). Attributes a driver may set:
    `use_checkpoint` (activation checkpointing per block) and `check_label_range` (the label bound
    check, which costs one host-device sync per call on an accelerator).
    """

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 1,
        in_channels: int = 32,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
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
        super().__init__()
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        # With learn_sigma the network also predicts a variance head that forward() discards.
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.use_rope = use_rope
        self.use_checkpoint = use_checkpoint
        self.check_label_range = True

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        grid_size = self.x_embedder.grid_size
        # Fixed sin-cos table stored as a frozen Parameter (not a buffer), as in DiT: it is in the
        # state dict, in named_parameters() and hence in the EMA, but never trained.
        # Filled by initialize_weights().
        self.pos_embed = nn.Parameter(
            torch.zeros(1, grid_size * grid_size, hidden_size), requires_grad=False
        )
        if use_rope:
            head_dim = hidden_size // num_heads
            self.feat_rope = VisionRotaryEmbedding(head_dim, grid_size)
        else:
            self.feat_rope = None
        self.blocks = nn.ModuleList(
            LightningDiTBlock(
                hidden_size, num_heads, mlp_ratio, use_qknorm, use_swiglu, use_rmsnorm, wo_shift
            )
            for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, use_rmsnorm)
        self.initialize_weights()

    # ------------------------------------------------------------------ initialisation

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier Linears, N(0, 0.02) embeddings, zero adaLN and output layer."""

        def xavier_linear(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(xavier_linear)
        self.reset_fixed_tables()
        # The patch conv is initialised like a Linear over its flattened (C*p*p) fan-in.
        patch_weight = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(patch_weight.view(patch_weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every residual branch and the output start at zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def reset_fixed_tables(self) -> None:
        """Recompute `pos_embed` and the RoPE buffers (needed after `to_empty()` from meta)."""
        table = sincos_2d_position_table(self.hidden_size, self.x_embedder.grid_size)
        with torch.no_grad():
            self.pos_embed.copy_(table)
        if self.feat_rope is not None:
            self.feat_rope.reset_tables()

    # ------------------------------------------------------------------ input checks

    @property
    def num_label_rows(self) -> int:
        """Valid label ids are 0 .. num_label_rows - 1 (the last one is the null class)."""
        return self.y_embedder.embedding_table.num_embeddings

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ValueError with a clear message for inputs the network cannot digest."""
        if x.ndim != 4:
            raise ValueError(f"expected latents (B, C, H, W), got shape {tuple(x.shape)}")
        batch, channels, height, width = x.shape
        if channels != self.in_channels:
            raise ValueError(
                f"latents have {channels} channels but the model was built with "
                f"in_channels={self.in_channels} (tokenizer/latent mismatch?)"
            )
        if (height, width) != (self.input_size, self.input_size):
            raise ValueError(
                f"latent grid {height}x{width} does not match input_size={self.input_size}: "
                "the position tables (pos_embed, RoPE) are fixed to that grid"
            )
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        if y.shape != (batch,) or y.is_floating_point():
            raise ValueError(
                f"y must be integer labels of shape ({batch},), got {y.dtype} {tuple(y.shape)}"
            )
        # Skipped while compiling: a data-dependent branch would break the graph.
        if self.check_label_range and not torch.compiler.is_compiling():
            if bool(((y < 0) | (y >= self.num_label_rows)).any()):
                raise ValueError(
                    f"labels must lie in [0, {self.num_label_rows - 1}] ({self.num_classes} "
                    f"classes, null class {self.num_classes} if class_dropout_prob > 0); got "
                    f"min {int(y.min())}, max {int(y.max())}"
                )

    # ------------------------------------------------------------------ forward passes

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) -> (N, C, H, W), with each token's features ordered (p, q, c)."""
        p, c, grid = self.patch_size, self.out_channels, self.x_embedder.grid_size
        x = tokens.reshape(tokens.shape[0], grid, grid, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(tokens.shape[0], c, grid * p, grid * p)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, variance: bool = False
    ) -> torch.Tensor:
        """Velocity for latents x (B, C, H, W), flow times t (B,) in [0, 1], labels y (B,).

        Under DiT's DDPM objective (`workloads.dit.diffusion`) t is the integer step and the
        output is eps; `variance=True` keeps the learned-variance channels (`learn_sigma`).
        """
        self.check_inputs(x, t, y)
        # The absolute sin-cos table is still added although every block also applies RoPE.
        tokens = self.x_embedder(x) + self.pos_embed
        # self.training switches label dropout on (for CFG training), as in DiT's `train` flag.
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        checkpointing = self.use_checkpoint and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointing:
                # Non-reentrant variant (the reference uses reentrant): same numerics, and it
                # composes with torch.compile and with inputs that need no grad.
                tokens = torch.utils.checkpoint.checkpoint(
                    block, tokens, c, self.feat_rope, use_reentrant=False
                )
            else:
                tokens = block(tokens, c, self.feat_rope)
        out = self.unpatchify(self.final_layer(tokens, c))
        if self.learn_sigma and not variance:
            out = out[:, : self.in_channels]
        return out

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        cfg_interval_start: float = 0.0,
        cfg_channels: int | None = 3,
        variance: bool = False,
    ) -> torch.Tensor:
        """Classifier-free guided velocity on a doubled batch, as the reference computes it.

        The batch is [conditional half; null-label half]; only the first half of `x` is read and
        duplicated. Guidance uncond + s * (cond - uncond) is applied to the first `cfg_channels`
        channels, or to all channels with `cfg_channels=None`. Where `t[0] < cfg_interval_start`
        the guided channels are the conditional prediction (CFG interval; 0.0 = always guided,
        which equals the reference's `cfg_interval=False`). The other channels keep the unguided
        prediction of each row (DiT's learned variance too, with `variance=True`). Returns the
        full (2B', C, H, W) batch; callers keep the first half.
        """
        if x.shape[0] % 2 != 0:
            raise ValueError(
                f"forward_with_cfg needs an even batch [cond; uncond], got {x.shape[0]}"
            )
        half = x[: x.shape[0] // 2]
        out = self(torch.cat([half, half], dim=0), t, y, variance=variance)
        # Default 3: for exact reproducibility of DiT/LightningDiT numbers only the first three
        # latent channels are guided (a DiT legacy from 3-channel pixels; LightningDiT issue #21).
        # All released cfg scales were tuned with it. cfg_channels=None guides every channel.
        num_guided = out.shape[1] if cfg_channels is None else cfg_channels
        guided_part, rest = out[:, :num_guided], out[:, num_guided:]
        cond, uncond = guided_part.chunk(2, dim=0)
        guided = uncond + cfg_scale * (cond - uncond)
        # The reference tests only t[0]; torch.where keeps this free of a host-device sync.
        guided = torch.where(t[0] < cfg_interval_start, cond, guided)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)
