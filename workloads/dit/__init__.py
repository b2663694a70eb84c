"""LightningDiT generator: model, size registry, checkpoint loading, objective, EMA, latent stats."""

from workloads.dit.checkpoint import (
    CheckpointMismatchError,
    LoadReport,
    load_lightningdit_checkpoint,
)
from workloads.dit.diffusion import DDPMObjective, GaussianDiffusion
from workloads.dit.ema import EMA
from workloads.dit.latent_norm import LatentStats
from workloads.dit.model import LightningDiT
from workloads.dit.objective import RectifiedFlowObjective, flow_path
from workloads.dit.registry import LightningDiT_models

__all__ = [
    "EMA",
    "CheckpointMismatchError",
    "LatentStats",
    "LightningDiT",
    "LightningDiT_models",
    "LoadReport",
    "DDPMObjective",
    "GaussianDiffusion",
    "RectifiedFlowObjective",
    "flow_path",
    "load_lightningdit_checkpoint",
]
