"""Trainer-agnostic VA-VAE optimisation steps.

Two equivalent forms:
* :func:`train_step_two_optimizers`: the reference order (Lightning manual optimization): one
  forward, autoencoder Adam step, then discriminator Adam step on detached reconstructions.
* :func:`train_step_single_backward`: ``loss = generator_total + discriminator_loss`` with
  disjoint gradients, one backward, one Adam with two param groups. This is the form for a
  DeepSpeed engine (``engine.backward(loss); engine.step()``).
"""

import torch
from torch import nn

from workloads.vavae.objective import VAVAEObjective
from workloads.vavae.training_model import VAVAE

# Reference optimizer (vavae/ldm/models/autoencoder.py configure_optimizers): Adam, not AdamW,
# constant lr 1e-4 (LR scaling explicitly off), betas (0.5, 0.9), no weight decay, fp32.
LEARNING_RATE = 1e-4
BETAS = (0.5, 0.9)


def build_optimizers(
    model: VAVAE, lr: float = LEARNING_RATE, betas: tuple[float, float] = BETAS
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The reference's two optimizers: (autoencoder + projection, discriminator)."""
    return (
        torch.optim.Adam(model.generator_parameters(), lr=lr, betas=betas),
        torch.optim.Adam(model.discriminator_parameters(), lr=lr, betas=betas),
    )


def build_single_optimizer(
    model: VAVAE, lr: float = LEARNING_RATE, betas: tuple[float, float] = BETAS
) -> torch.optim.Adam:
    """One Adam with a ``generator`` and a ``discriminator`` param group (same hyperparameters,
    per-parameter state, so it steps exactly as the two reference optimizers)."""
    return torch.optim.Adam(
        [
            {"params": list(model.generator_parameters()), "name": "generator"},
            {"params": list(model.discriminator_parameters()), "name": "discriminator"},
        ],
        lr=lr,
        betas=betas,
    )


def train_step_two_optimizers(
    model: nn.Module,
    objective: VAVAEObjective,
    x: torch.Tensor,
    step: int,
    ae_optimizer: torch.optim.Optimizer,
    disc_optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One iteration in the reference order; returns the detached loss terms."""
    generator_total, discriminator_total, terms = objective.losses(model, x, step, generator)
    ae_optimizer.zero_grad(set_to_none=True)
    generator_total.backward()
    ae_optimizer.step()
    # The discriminator graph holds only D and detached images, so the autoencoder update above
    # does not touch it: this is the reference's second pass on the same reconstructions.
    disc_optimizer.zero_grad(set_to_none=True)
    discriminator_total.backward()
    disc_optimizer.step()
    return terms


def train_step_single_backward(
    model: nn.Module,
    objective: VAVAEObjective,
    x: torch.Tensor,
    step: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One iteration with a single backward and one optimizer; returns the detached terms."""
    loss, terms = objective(model, x, step, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return terms
