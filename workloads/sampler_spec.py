"""The sampler settings, defined once: `SamplerSpec` is what the sampler runs, what the config's
`sampler:` section is (`orchestrator.config.schema.SamplerConfig` only sets paper defaults on it),
and what every evaluation spec records. No torch here, so the config stays import-light."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Literal, get_args

# euler / heun / dopri5 integrate the flow ODE; ddpm is DiT's ancestral sampler, for
# `generator.objective: ddpm` only (num_steps respaced steps; no shift, no CFG interval).
SamplerMethod = Literal["euler", "heun", "dopri5", "ddpm"]
METHODS: tuple[str, ...] = get_args(SamplerMethod)


@dataclass(frozen=True)
class SamplerSpec:
    """Everything that defines a sampling run (released FID setting: euler, 250, shift 0.3).

    `timestep_shift` s maps t -> s*t / (1 + (s-1)*t); the reference applies it only when s > 0, so
    0 (its plain setting) and 1 both mean no shift, and s < 1 packs steps near the noise end.
    `cfg_scale == 1.0` is a plain conditional forward with no doubled batch. Guidance is off where
    t < `cfg_interval_start` (0.0 = always on). `cfg_channels=3` reproduces the reference's
    guidance of the first three latent channels only; None guides all channels.
    `atol`/`rtol` are used by dopri5 only.
    """

    method: SamplerMethod
    num_steps: int
    timestep_shift: float = 0.0
    cfg_scale: float = 1.0
    cfg_interval_start: float = 0.0
    cfg_channels: int | None = 3
    atol: float = 1e-6
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int):
            raise ValueError(f"num_steps must be an int, got {self.num_steps!r}")
        if self.num_steps < 2:
            raise ValueError(f"num_steps counts grid points and must be >= 2, got {self.num_steps}")
        if not (math.isfinite(self.timestep_shift) and self.timestep_shift >= 0):
            raise ValueError(f"timestep_shift must be >= 0, got {self.timestep_shift}")
        if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise ValueError(f"cfg_scale must be finite and >= 0, got {self.cfg_scale}")
        if not 0.0 <= self.cfg_interval_start <= 1.0:
            raise ValueError(f"cfg_interval_start must be in [0, 1], got {self.cfg_interval_start}")
        if self.cfg_channels is not None and (
            isinstance(self.cfg_channels, bool)
            or not isinstance(self.cfg_channels, int)
            or self.cfg_channels < 1
        ):
            raise ValueError(
                f"cfg_channels must be a positive int or None, got {self.cfg_channels!r}"
            )
        if not (self.atol > 0 and self.rtol > 0):
            raise ValueError(f"atol and rtol must be positive, got {self.atol}, {self.rtol}")

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale != 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SamplerSpec fields: {unknown}")
        missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in data)
        if missing:
            raise ValueError(f"SamplerSpec lacks {missing}")
        return cls(**data)
