"""What produced a number: the evaluation spec stored with every generation metric, and honest labels.

A FID is only comparable to another FID with the same sampler settings, sample count, label policy,
reference statistics and evaluator weights (peers' "my FID doesn't match the paper" threads are
mostly mismatches in exactly these), so all of them travel with the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from workloads.metrics.names import METRICS
from workloads.sampler_spec import SamplerSpec

LABEL_POLICIES = ("uniform", "balanced")
_LABEL_PATTERN = re.compile(r"^(?P<name>.+)-(?P<count>\d+)(?P<thousands>K?)$")


@dataclasses.dataclass(frozen=True)
class EvaluatorIdentity:
    """Which network scored the samples: name, library/version and a checksum of its weights."""

    name: str
    version: str
    weights_sha256: str

    def key(self) -> str:
        """Compact string for cache keys and metric tags."""
        return f"{self.name}=={self.version}#sha256:{self.weights_sha256[:16]}"


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Everything that must match for two generation metrics to be comparable.

    `label_policy`: ``uniform`` draws each class label independently (``randint``, as the
    reference's sampler does); ``balanced`` uses the same number of samples for every class.
    """

    sampler: dict
    num_samples: int
    label_policy: str
    reference_stats_id: str
    evaluator: EvaluatorIdentity
    seeds: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # The sampler settings are a `SamplerSpec` (one definition): unknown or invalid fields fail.
        SamplerSpec.from_dict(self.sampler)
        if self.label_policy not in LABEL_POLICIES:
            raise ValueError(
                f"label_policy must be one of {LABEL_POLICIES}, got {self.label_policy!r}"
            )
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {self.num_samples}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalSpec:
        return cls(**{**data, "evaluator": EvaluatorIdentity(**data["evaluator"])})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalSpec:
        return cls.from_dict(json.loads(text))

    def identity(self) -> str:
        """Short hash: equal for exactly the specs whose metrics may be compared."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def label(self, metric: str) -> str:
        return metric_label(metric, self.num_samples)


def _count_suffix(num_samples: int) -> str:
    return f"{num_samples // 1000}K" if num_samples >= 1000 else str(num_samples)


def metric_label(metric: str, num_samples: int) -> str:
    """``metric_label("fid", 50_000) == "FID-50K"``; counts round *down* to thousands, so 49,999
    samples give ``FID-49K`` and a FID-50K label can never be earned by rounding."""
    info = METRICS.get(metric.lower())
    return f"{info.display if info else metric}-{_count_suffix(num_samples)}"


def require_label(label: str, num_samples: int) -> None:
    """Refuse a label that claims more samples than were evaluated (EDM2's rule for FID-50K)."""
    match = _LABEL_PATTERN.match(label)
    if match is None:
        raise ValueError(f"label {label!r} does not look like <METRIC>-<count>[K], e.g. 'FID-50K'")
    claimed = int(match["count"]) * (1000 if match["thousands"] else 1)
    if num_samples < claimed:
        honest = f"{match['name']}-{_count_suffix(num_samples)}"
        raise ValueError(
            f"{label} requires at least {claimed:,} samples but only {num_samples:,} were "
            f"evaluated; report it as {honest} instead"
        )
