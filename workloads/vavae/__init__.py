"""VA-VAE tokenizer (arXiv 2501.01423): LDM KL autoencoder + vision-foundation alignment loss.

Inference: ``AutoencoderKL`` (``build_autoencoder(preset)``, ``load_autoencoder_weights``).
Training: ``VAVAE`` (autoencoder + VF projection + discriminator), ``VAVAEObjective`` and the
steps in ``step.py``.
"""

from workloads.vavae.checkpoint import load_autoencoder_weights, read_state_dict_file
from workloads.vavae.discriminator import NLayerDiscriminator, hinge_d_loss
from workloads.vavae.lpips import LPIPS
from workloads.vavae.model import AutoencoderKL, Decoder, Encoder
from workloads.vavae.objective import (
    DEFAULT_DISC_START,
    VAVAEObjective,
    disc_start_from_lightning_steps,
)
from workloads.vavae.posterior import DiagonalGaussian
from workloads.vavae.presets import build_autoencoder, preset_kwargs, vavae_presets
from workloads.vavae.step import (
    build_optimizers,
    build_single_optimizer,
    train_step_single_backward,
    train_step_two_optimizers,
)
from workloads.vavae.training_model import VAVAE, build_vavae
from workloads.vavae.vf_loss import adaptive_vf_weight, vf_loss

__all__ = [
    "DEFAULT_DISC_START",
    "LPIPS",
    "VAVAE",
    "AutoencoderKL",
    "Decoder",
    "DiagonalGaussian",
    "Encoder",
    "NLayerDiscriminator",
    "VAVAEObjective",
    "adaptive_vf_weight",
    "build_autoencoder",
    "build_optimizers",
    "build_single_optimizer",
    "build_vavae",
    "disc_start_from_lightning_steps",
    "hinge_d_loss",
    "load_autoencoder_weights",
    "preset_kwargs",
    "read_state_dict_file",
    "train_step_single_backward",
    "train_step_two_optimizers",
    "vavae_presets",
    "vf_loss",
]
