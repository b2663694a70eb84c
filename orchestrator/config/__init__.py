"""Typed, validated configuration: schema, presets, YAML in/out, content hashes, sweep spaces."""

from orchestrator.config.identity import StageKeys, stage_keys
from orchestrator.config.loading import ConfigError, content_hash, dump_yaml, from_dict, to_dict
from orchestrator.config.presets import PRESETS
from orchestrator.config.schema import ExperimentConfig, SweepConfig
from orchestrator.config.space import SweepPoint, build_config, expand, load_sweep, point_label
from orchestrator.config.validation import latent_grid, resolve, validate

__all__ = [
    "PRESETS",
    "ConfigError",
    "ExperimentConfig",
    "StageKeys",
    "SweepConfig",
    "SweepPoint",
    "build_config",
    "content_hash",
    "dump_yaml",
    "expand",
    "from_dict",
    "latent_grid",
    "load_sweep",
    "point_label",
    "resolve",
    "stage_keys",
    "to_dict",
    "validate",
]
