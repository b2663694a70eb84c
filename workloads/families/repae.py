"""REPA-E (arXiv 2504.10483): the VAE tuned end to end through a diffusion model's REPA loss.

Source: End2End-Diffusion/REPA-E@3ad8046 train_repae.py L340-432, models/sit.py,
configs/l1_lpips_kl_gan.yaml. One step, in the reference's order and with its gradient routing:

1. VAE: L1 + LPIPS + 1e-6 KL + 0.1 * GAN (a *constant* weight, on from step 0) + 1.5 * REPA,
   where REPA runs the sampled latent through the latent BatchNorm (running statistics), the
   noising path and the DiT's first 8 blocks + projector **with the DiT frozen**: its gradient
   reaches the VAE only.
2. The discriminator (hinge), as for every family.
3. The DiT on `z.detach()` (the diffusion loss never reaches the VAE): velocity MSE + 0.5 * REPA,
   with the same t and noise; the BatchNorm's running statistics move only here.

Here the three losses are summed with disjoint gradients (the DiT and projector enter step 1
through `functional_call` with detached parameters, z is detached in step 3), so one backward
and one optimizer with a group per network make the reference's three updates; the only
difference is that step 3 sees the VAE *before* its update, not after (the reference encodes
once and reuses z as well, so its DiT step reads the pre-update latent too).

The DiT and its projector are training-only: the stage's output is an ordinary tokenizer whose
latent statistics are the BatchNorm's running statistics (`save_vae_weights.py` exports them as
`<name>-latents-stats.pt`), which the latent cache then uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workloads.families.base import TokenizerFamily, TrainingView, uniform

VAE_ALIGN_WEIGHT = 1.5  # --vae-align-proj-coeff
DIT_ALIGN_WEIGHT = 0.5  # --proj-coeff
ENCODER_DEPTH = 8  # --encoder-depth: REPA aligns the output of the DiT's 8th block
PROJECTOR_WIDTH = 2048  # models/sit.py build_mlp: hidden -> 2048 -> 2048 -> feature dim, SiLU
GAN_WEIGHT = 0.1  # configs/l1_lpips_kl_gan.yaml: constant generator GAN weight (not adaptive)
BN_EPS, BN_MOMENTUM = 1e-4, 0.1  # models/sit.py L217-221 (--bn-momentum 0.1)
DIT_BETAS = (0.9, 0.999)  # train_repae.py: AdamW for the SiT, wd 0, lr 1e-4


class REPAEModules(nn.Module):
    """The training-only networks: the DiT, its REPA projector and the latent BatchNorm.

    `forward(x_t, t, y)` is the alignment path (tokens after `encoder_depth` blocks, projected
    to the feature width); `velocity_and_tokens` is the DiT's full forward with the same tokens.
    """

    def __init__(self, dit: nn.Module, feature_dim: int, encoder_depth: int = ENCODER_DEPTH):
        super().__init__()
        self.dit = dit
        hidden = dit.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(hidden, PROJECTOR_WIDTH),
            nn.SiLU(),
            nn.Linear(PROJECTOR_WIDTH, PROJECTOR_WIDTH),
            nn.SiLU(),
            nn.Linear(PROJECTOR_WIDTH, feature_dim),
        )
        # affine=False "to avoid affine hacking diffusion loss" (models/sit.py).
        self.bn = nn.BatchNorm2d(dit.in_channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.encoder_depth = min(encoder_depth, len(dit.blocks))

    def _tokens(self, x_t, t, y, *, full: bool):
        dit = self.dit
        tokens = dit.x_embedder(x_t) + dit.pos_embed
        # Label dropout only in the DiT's own step: the VAE step runs the DiT in eval mode.
        c = dit.t_embedder(t) + dit.y_embedder(y, self.training and full)
        aligned = None
        for index, block in enumerate(dit.blocks):
            tokens = block(tokens, c, dit.feat_rope)
            if index + 1 == self.encoder_depth:
                aligned = self.projector(tokens)
                if not full:  # the reference's `align_only` break
                    return aligned, None
        return aligned, dit.unpatchify(dit.final_layer(tokens, c))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._tokens(x_t, t, y, full=False)[0]

    def velocity_and_tokens(self, x_t, t, y):
        aligned, velocity = self._tokens(x_t, t, y, full=True)
        return velocity, aligned

    def normalize(self, z: torch.Tensor, update: bool) -> torch.Tensor:
        """The latent BatchNorm: batch statistics and a running-stat update in the DiT step
        (`update`), the running statistics in the VAE step (the reference's `SiT.eval()`)."""
        bn = self.bn
        if update:
            if bn.num_batches_tracked.item() == 0:
                # Initialised from the starting tokenizer's latent statistics (the reference
                # sets running_mean = shift, running_var = 1 / scale^2 of the VAE it starts from).
                with torch.no_grad():
                    bn.running_mean.copy_(z.mean(dim=(0, 2, 3)))
                    bn.running_var.copy_(z.var(dim=(0, 2, 3)))
            bn.num_batches_tracked.add_(1)
        if not update:
            # Copies: the DiT step updates the running statistics in place before the one
            # backward of the summed losses, which still needs these values.
            return F.batch_norm(
                z, bn.running_mean.clone(), bn.running_var.clone(), training=False, eps=bn.eps
            )
        return F.batch_norm(
            z, bn.running_mean, bn.running_var, training=True, momentum=bn.momentum, eps=bn.eps
        )

    def latent_stats(self) -> dict[str, list[float]]:
        """The running statistics as the cache's per-channel latent statistics."""
        return {
            "mean": self.bn.running_mean.tolist(),
            "std": (self.bn.running_var + self.bn.eps).sqrt().tolist(),
        }


def alignment_loss(projected: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """REPA's negative cosine similarity per token, averaged: projected (B, T, D) against the
    foundation's patch tokens (B, D, h, w) on the same grid."""
    target = features.flatten(2).transpose(1, 2)
    return -F.cosine_similarity(projected, target.to(projected.dtype), dim=-1).mean()


class REPAEFamily(TokenizerFamily):
    name = "repae"
    source = "End2End-Diffusion/REPA-E@3ad8046:train_repae.py"
    # The foundation model named by `tokenizer.vf` is REPA's target here, not a VF loss.
    uses_vf_loss = False
    needs_features = True
    # A constant GAN weight (`tokenizer.loss.disc_weight`, 0.1 in REPA-E's recipe), not taming's
    # adaptive one.
    adaptive_gan = False
    extra_betas = DIT_BETAS
    mean_reconstruction = True  # loss/losses.py: F.l1_loss(..., reduction="mean"), LPIPS .mean()

    def training_view(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None
    ) -> TrainingView:
        module = getattr(model, "module", model)
        posterior = module.encode(x)
        z = posterior.sample(generator)
        return TrainingView(x, x, module.decode(z), posterior, None, latent=z)

    def build_extra(self, dit: nn.Module, feature_dim: int) -> REPAEModules:
        return REPAEModules(dit, feature_dim)

    def extra_loss(
        self,
        extra: REPAEModules,
        view: TrainingView,
        features: torch.Tensor,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = view.latent
        if labels is None:  # no class labels: the DiT runs unconditionally (its null class)
            labels = torch.full((z.shape[0],), extra.dit.num_classes, device=z.device)
        # REPA-E draws t ~ U(0, 1) and one noise for both steps ("linear path, v-pred, uniform t").
        t = uniform((z.shape[0],), generator, z.device)
        rng_device = generator.device if generator is not None else z.device
        noise = torch.randn(z.shape, generator=generator, device=rng_device).to(z)
        align_vae = vae_alignment(extra, z, t, noise, labels, features)
        mse, align_dit = dit_losses(extra, z.detach(), t, noise, labels, features)
        total = VAE_ALIGN_WEIGHT * align_vae + mse + DIT_ALIGN_WEIGHT * align_dit
        terms = {"repa_vae": align_vae, "dit_mse": mse, "repa_dit": align_dit}
        return total, {name: value.detach() for name, value in terms.items()}


def _noised(z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    # The linear path in LightningDiT's time (t = 0 noise); REPA-E's is the same with t reversed.
    t_b = t.view(-1, 1, 1, 1).to(z.dtype)
    return t_b * z + (1 - t_b) * noise


def vae_alignment(extra, z, t, noise, labels, features) -> torch.Tensor:
    """Step 1's REPA term: the latent through the BatchNorm's running statistics and the DiT's
    first blocks with **detached** DiT and projector parameters, so it trains the VAE only."""
    frozen = {name: p.detach() for name, p in extra.named_parameters()}
    z_norm = extra.normalize(z, update=False)
    return alignment_loss(
        functional_call(extra, frozen, (_noised(z_norm, t, noise), t, labels)), features
    )


def dit_losses(extra, z_detached, t, noise, labels, features) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3: velocity MSE and REPA of the DiT on the detached latent (batch statistics, which
    also move the BatchNorm's running statistics); it trains the DiT and projector only."""
    z_norm = extra.normalize(z_detached, update=True)
    velocity, projected = extra.velocity_and_tokens(_noised(z_norm, t, noise), t, labels)
    mse = (velocity.float() - (z_norm - noise).float()).pow(2).mean()
    return mse, alignment_loss(projected, features)


FAMILY = REPAEFamily()
