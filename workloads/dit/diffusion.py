"""DiT's own objective: discrete DDPM with epsilon prediction and a learned variance (paper Tab. 1,
rung 0, the ladder's starting point before rectified flow).

As DiT's `diffusion/` (from OpenAI's improved/guided diffusion, `create_diffusion(timestep_respacing
="")`): a linear beta schedule from 1e-4 to 0.02 over 1000 steps, x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps with **t = 0 nearly clean and t = 999 nearly noise** (the reverse of the flow
convention), the network fed the integer step t. With `learn_sigma` the network's second half of
channels v sets log variance = frac * log(beta_t) + (1 - frac) * log(beta~_t), frac = (v + 1) / 2,
and the loss is L_hybrid: MSE on eps plus the variational bound on the variance alone (the mean
is detached there), in bits per dimension. The schedule is computed in float64, as DiT does.
Sampling (ancestral, on a respaced schedule) lives in `workloads.samplers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NUM_TIMESTEPS = 1000


def _extract(values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32, broadcast to `like`'s shape (DiT's `_extract_into_tensor`)."""
    out = torch.from_numpy(values).to(like.device)[t].float()
    return out.view(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class GaussianDiffusion:
    """A discrete schedule given by its betas; `linear()` is DiT's, `respaced(n)` a sub-schedule."""

    betas: np.ndarray

    @classmethod
    def linear(cls, num_timesteps: int = NUM_TIMESTEPS) -> GaussianDiffusion:
        scale = 1000 / num_timesteps
        return cls(np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64))

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-d array in (0, 1]")
        abar = np.cumprod(1.0 - betas)
        abar_prev = np.append(1.0, abar[:-1])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        derived = {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1),
            "posterior_variance": post_var,
            # The posterior variance is 0 at t = 0: the log is clipped to the t = 1 value.
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])),
            "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def respaced(self, num_steps: int) -> tuple[GaussianDiffusion, list[int]]:
        """The schedule on `num_steps` evenly spaced steps (DiT's `space_timesteps(1000, [n])`) and
        the original step of each, which is what the network is fed."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"cannot respace {self.num_timesteps} steps into {num_steps}")
        stride = (self.num_timesteps - 1) / (num_steps - 1) if num_steps > 1 else 1
        kept_set, position = set(), 0.0
        for _ in range(num_steps):  # accumulated, then rounded, exactly as DiT does
            kept_set.add(round(position))
            position += stride
        kept = sorted(kept_set)
        betas, last = [], 1.0
        for t in kept:
            betas.append(1 - self.alphas_cumprod[t] / last)
            last = self.alphas_cumprod[t]
        return GaussianDiffusion(np.array(betas)), kept

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of q(x_{t-1} | x_t, x0)."""
        mean = (
            _extract(self.posterior_mean_coef1, t, x_t) * x0
            + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, _extract(self.posterior_log_variance_clipped, t, x_t)

    def p_mean_variance(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, learn_sigma: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of p(x_{t-1} | x_t) from the network output (eps[, v])."""
        if learn_sigma:
            eps, v = output.chunk(2, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = _extract(np.log(self.betas), t, x_t)
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
        else:
            # DiT's fixed "large" variance: beta_t, with the posterior's value at t = 0.
            eps = output
            fixed = np.append(self.posterior_variance[1], self.betas[1:])
            log_var = _extract(np.log(fixed), t, x_t).expand_as(x_t)
        x0 = (
            _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )
        mean, _ = self.q_posterior(x0, x_t, t)
        return mean, log_var


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood of x in [-1, 1] under a Gaussian discretised into 256 bins (ADM's decoder
    term at t = 0, which DiT applies to latents unchanged)."""

    def cdf(v: torch.Tensor) -> torch.Tensor:  # ADM's tanh approximation of the normal CDF
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, log_delta),
    )


@dataclass
class DDPMObjective:
    """Loss of one training step: {"loss", "mse", "vb"} (vb is 0 without `learn_sigma`)."""

    learn_sigma: bool = True

    def __post_init__(self) -> None:
        self.diffusion = GaussianDiffusion.linear()

    def __call__(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        rng_device = generator.device if generator is not None else x0.device
        steps = self.diffusion.num_timesteps
        t = torch.randint(0, steps, (x0.shape[0],), generator=generator, device=rng_device)
        noise = torch.randn(x0.shape, generator=generator, device=rng_device, dtype=x0.dtype)
        t, noise = t.to(x0.device), noise.to(x0.device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        output = model(x_t, t.float(), y, variance=True).float()
        eps = output[:, : x0.shape[1]]
        mse = (eps - noise).pow(2).mean()
        if not self.learn_sigma:
            return {"loss": mse, "mse": mse.detach(), "vb": torch.zeros_like(mse)}
        # The bound trains the variance only: the predicted mean is detached (DiT's `frozen_out`).
        frozen = torch.cat([eps.detach(), output[:, x0.shape[1] :]], dim=1)
        true_mean, true_log_var = self.diffusion.q_posterior(x0, x_t, t)
        mean, log_var = self.diffusion.p_mean_variance(frozen, x_t, t, learn_sigma=True)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
        nll = nll.flatten(1).mean(1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl).mean()
        return {"loss": mse + vb, "mse": mse.detach(), "vb": vb.detach()}
