"""The full VA-VAE training objective (LDM ``LPIPSWithDiscriminator`` + the VF loss).

Generator loss, as in ``vavae/ldm/modules/losses/contperceptual.py`` (optimizer_idx 0):
    nll + kl_weight * kl + d_weight * disc_factor * g + vf_weight_adaptive * vf
Discriminator loss (optimizer_idx 1):
    disc_factor * hinge(D(x), D(x_hat.detach()))

``VAVAEObjective.__call__`` returns their sum with *disjoint* gradients: the generator's
adversarial term evaluates D with detached parameters and the discriminator loss sees detached
reconstructions. One backward and one optimizer (two param groups) therefore make the same update
as the reference's two optimizers stepped one after the other (see ``step.py``).
"""

import math

import torch
from torch import nn
from torch.func import functional_call

from workloads.families.base import TokenizerFamily
from workloads.vavae.discriminator import hinge_d_loss
from workloads.vavae.posterior import DiagonalGaussian
from workloads.vavae.vf_loss import adaptive_vf_weight, vf_loss

# taming's calculate_adaptive_weight: eps in the denominator and upper clamp of the GAN weight.
D_WEIGHT_EPS = 1e-4
D_WEIGHT_MAX = 1e4

# Lightning 2 manual optimization increments `global_step` once per optimizer step, i.e. twice
# per iteration here (autoencoder + discriminator; Lightning issue #17958). The reference's
# adopt_weight switches the GAN on once global_step = 2 * iteration >= disc_start, so its config
# value 5001 means iteration ceil(5001 / 2) = 2501, and the long recipe's 1 means iteration 1.
DEFAULT_DISC_START = 2501


def disc_start_from_lightning_steps(lightning_global_steps: int) -> int:
    """Convert a reference ``disc_start`` (Lightning global steps) to 0-based iterations."""
    return math.ceil(lightning_global_steps / 2)


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP and DeepSpeed engines keep the user module in `.module`.
    return getattr(model, "module", model)


class VAVAEObjective:
    """Every loss term of VA-VAE training for one batch; stage hyperparameters are plain args.

    Defaults are the paper's experiment config (``vavae/configs/f16d32_vfdinov2.yaml``), with
    ``disc_start`` converted to real iterations. The frozen ``lpips`` and ``foundation`` networks
    are plain attributes, never submodules of the trained model; move them with :meth:`to`.
    """

    def __init__(
        self,
        lpips: nn.Module | None,
        foundation: nn.Module | None,
        *,
        use_vf: bool = True,
        vf_weight: float = 0.1,
        adaptive_vf: bool = True,
        cos_margin: float = 0.5,
        distmat_margin: float = 0.25,
        cos_weight: float = 1.0,
        distmat_weight: float = 1.0,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 1.0,
        disc_weight: float = 0.5,
        disc_factor: float = 1.0,
        disc_start: int = DEFAULT_DISC_START,
        family: TokenizerFamily | None = None,
        decoder_only: bool = False,
    ):
        if perceptual_weight > 0 and lpips is None:
            raise ValueError("perceptual_weight > 0 needs an LPIPS module (or set it to 0)")
        if use_vf and foundation is None:
            raise ValueError("use_vf=True needs a foundation model (or set use_vf=False)")
        self.lpips = lpips
        self.foundation = foundation
        self.use_vf = use_vf
        self.vf_weight = vf_weight
        self.adaptive_vf = adaptive_vf
        self.cos_margin = cos_margin
        self.distmat_margin = distmat_margin
        self.cos_weight = cos_weight
        self.distmat_weight = distmat_weight
        self.kl_weight = kl_weight
        self.perceptual_weight = perceptual_weight
        self.disc_weight = disc_weight
        self.disc_factor = disc_factor
        self.disc_start = disc_start
        # The family decides what is encoded, decoded and compared (workloads/families); the
        # default is the plain VA-VAE step.
        self.family = family if family is not None else TokenizerFamily()
        # A `train: decoder` stage: the encoder is frozen and the family's augmentations are off.
        self.decoder_only = decoder_only

    def to(self, device: torch.device | str) -> "VAVAEObjective":
        """Move the frozen networks to ``device``."""
        for network in (self.lpips, self.foundation):
            if network is not None:
                network.to(device)
        return self

    def disc_factor_at(self, step: int) -> float:
        """GAN factor at 0-based iteration ``step``: 0 before ``disc_start``."""
        return self.disc_factor if step >= self.disc_start else 0.0

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        step: int,
        generator: torch.Generator | None = None,
        extra: nn.Module | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Single-backward form: (generator_total + discriminator_loss, detached terms)."""
        generator_total, discriminator_total, terms = self.losses(
            model, x, step, generator, extra, labels
        )
        return generator_total + discriminator_total, terms

    def losses(
        self,
        model: nn.Module,
        x: torch.Tensor,
        step: int,
        generator: torch.Generator | None = None,
        extra: nn.Module | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One forward of ``model`` (a VAVAE, or a DDP/DeepSpeed engine around one) on images
        ``x`` in [-1, 1] at 0-based iteration ``step``. ``extra``: the family's training-only
        networks (REPA-E's DiT), trained by the family's ``extra_loss`` with class ``labels``.

        Returns (generator_total, discriminator_loss, terms). Call with grad enabled: the
        adaptive weights differentiate the losses w.r.t. the last-layer weights.
        """
        module = _unwrap(model)
        view = self.family.view(model, x, generator, self.decoder_only)
        reconstruction, posterior, z_proj = view.reconstruction, view.posterior, view.z_proj
        features = None
        if self.use_vf:
            if z_proj is None:
                raise ValueError("use_vf=True but the model has no linear_proj (vf_feature_dim)")
            features = self.foundation(view.image, grid=tuple(z_proj.shape[-2:]))
        elif extra is not None and self.family.needs_features:
            grid = view.latent.shape[-1] // extra.dit.patch_size
            features = self.foundation(view.image, grid=(grid, grid))
        # The reconstruction is scored against the family's target (the image itself, or the
        # image under the same transform as the latent for EQ-VAE); so are D's real samples.
        x = view.target
        encoder_last, decoder_last = self.family.last_layers(module)
        generator_total, terms = self.generator_loss(
            x,
            reconstruction,
            posterior,
            step,
            discriminator=module.discriminator,
            encoder_last_layer=encoder_last,
            decoder_last_layer=decoder_last,
            z_proj=z_proj,
            features=features,
            logvar=module.loss.logvar,
        )
        if extra is not None:
            extra_total, extra_terms = self.family.extra_loss(
                extra, view, features, labels, generator
            )
            generator_total = generator_total + extra_total
            terms.update(extra_terms)
        discriminator_total, disc_terms = self.discriminator_loss(
            module.discriminator, x, reconstruction, step
        )
        terms.update(disc_terms)
        terms["total"] = (generator_total + discriminator_total).detach()
        return generator_total, discriminator_total, terms

    def generator_loss(
        self,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        posterior: DiagonalGaussian,
        step: int,
        *,
        discriminator: nn.Module,
        encoder_last_layer: torch.Tensor,
        decoder_last_layer: torch.Tensor,
        z_proj: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        logvar: torch.Tensor | float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The autoencoder's loss and its named terms (reference optimizer_idx 0)."""
        batch = x.shape[0]
        l1 = (x - reconstruction).abs()
        rec = l1
        if self.perceptual_weight > 0:
            # Per-image LPIPS (B, 1, 1, 1) broadcast onto every pixel, then summed with L1.
            lpips = self.lpips(x, reconstruction)
            rec = l1 + self.perceptual_weight * lpips
        else:
            lpips = torch.zeros((), device=x.device)
        logvar = torch.as_tensor(logvar, device=x.device)
        if self.family.mean_reconstruction:
            # REPA-E's ReconstructionLoss_Single_Stage: L1 and LPIPS as means over pixels.
            nll = torch.mean(rec / torch.exp(logvar) + logvar)
        else:
            # Sum over pixels, mean over the batch: a *sum* loss (~1e4 at 256 px), which is why
            # the adaptive weights below exist.
            nll = torch.sum(rec / torch.exp(logvar) + logvar) / batch
        kl = torch.sum(posterior.kl()) / batch

        # D with detached parameters: the generator's adversarial term must not produce
        # discriminator gradients (the reference discards them with opt_disc.zero_grad()).
        frozen_params = {name: p.detach() for name, p in discriminator.named_parameters()}
        g = -torch.mean(functional_call(discriminator, frozen_params, (reconstruction,)))
        d_weight = torch.zeros((), device=x.device)
        if not self.family.adaptive_gan:
            d_weight = torch.as_tensor(self.disc_weight, device=x.device)
        elif self.disc_factor > 0 and torch.is_grad_enabled():
            # Computed even before disc_start, as the reference does (for logging); it only
            # multiplies g once disc_factor_at(step) > 0.
            d_weight = self._adaptive_gan_weight(nll, g, decoder_last_layer)
        disc_factor = self.disc_factor_at(step)
        total = nll + self.kl_weight * kl + d_weight * disc_factor * g

        zero = torch.zeros((), device=x.device)
        vf_terms = {"mcos": zero, "mdms": zero, "vf": zero}
        vf_weight_adaptive = zero
        if self.use_vf:
            vf_terms = vf_loss(
                z_proj,
                features,
                self.cos_margin,
                self.distmat_margin,
                self.cos_weight,
                self.distmat_weight,
            )
            if not self.adaptive_vf:
                vf_weight_adaptive = torch.as_tensor(self.vf_weight, device=x.device)
            elif torch.is_grad_enabled():
                vf_weight_adaptive = adaptive_vf_weight(
                    nll, vf_terms["vf"], encoder_last_layer, self.vf_weight
                )
            total = total + vf_weight_adaptive * vf_terms["vf"]

        terms = {
            "generator_total": total,
            "nll": nll,
            # The reference logs rec_loss.mean(): L1 plus the broadcast LPIPS, per element.
            "rec": rec.mean(),
            "l1": l1.mean(),
            "lpips": lpips.mean(),
            "kl": kl,
            "g": g,
            "d_weight": d_weight,
            "disc_factor": torch.as_tensor(disc_factor, device=x.device),
            "vf_weight_adaptive": vf_weight_adaptive,
            **vf_terms,
        }
        return total, {name: value.detach() for name, value in terms.items()}

    def discriminator_loss(
        self,
        discriminator: nn.Module,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on real images and detached reconstructions (reference optimizer_idx 1)."""
        # Two separate D calls, as the reference: BatchNorm statistics are per call, so real
        # and fake batches are normalised separately.
        logits_real = discriminator(x.detach())
        logits_fake = discriminator(reconstruction.detach())
        d = self.disc_factor_at(step) * hinge_d_loss(logits_real, logits_fake)
        terms = {
            "d": d.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }
        return d, terms

    def _adaptive_gan_weight(
        self, nll: torch.Tensor, g: torch.Tensor, last_layer: torch.Tensor
    ) -> torch.Tensor:
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
        ratio = torch.norm(nll_grad) / (torch.norm(g_grad) + D_WEIGHT_EPS)
        return torch.clamp(ratio, 0.0, D_WEIGHT_MAX).detach() * self.disc_weight
