"""Diagonal Gaussian posterior over the latent, as produced by the VA-VAE encoder."""

import torch

# LDM clamps the raw log-variance so exp() can neither underflow to 0 nor overflow.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussian:
    """N(mean, exp(logvar)) per latent element; ``moments`` holds [mean | raw logvar] on dim 1."""

    def __init__(self, moments: torch.Tensor):
        self.moments = moments
        self.mean, raw_logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(raw_logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw mean + std * eps.

        Without a generator, eps comes from the global RNG of the latent's device; on CPU this is
        the reference's ``torch.manual_seed(s); torch.randn(mean.shape)``.
        """
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        """The posterior mode, which is the mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over C, H, W: shape (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
