"""Named LightningDiT sizes, as factory functions in a dict (DiT `DiT_models` style).

Paper sizes use the reference names. The reference registers only L/2; L/1 is added here because
the paper uses patch size 1 throughout. Debug and Micro are CPU-test sizes. Constructor keywords
not fixed by a size (input_size, in_channels, num_classes, feature flags, ...) pass through, and
their defaults are the released recipe (see `LightningDiT`). `head={depth, width, heads}` turns
any size into the trunk of a DiT^DH (`workloads.dit.ddt`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workloads.dit.model import LightningDiT


def _build(*, head: dict[str, int] | None = None, **kwargs: Any) -> LightningDiT:
    """The named size as a LightningDiT, or with `head` ({depth, width, heads}) as the trunk of
    a DiT^DH (RAE's DDT head; DiT^DH-XL = the XL/1 trunk + head {depth 2, width 2048, heads 16})."""
    if head is None:
        return LightningDiT(**kwargs)
    from workloads.dit.ddt import DiTDH

    return DiTDH(
        head_depth=head["depth"], head_width=head["width"], head_heads=head["heads"], **kwargs
    )


def LightningDiT_1p6B_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=28, hidden_size=1792, patch_size=1, num_heads=28, **kwargs)


def LightningDiT_1p6B_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=28, hidden_size=1792, patch_size=2, num_heads=28, **kwargs)


def LightningDiT_1p0B_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=24, hidden_size=1536, patch_size=1, num_heads=24, **kwargs)


def LightningDiT_1p0B_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=24, hidden_size=1536, patch_size=2, num_heads=24, **kwargs)


def LightningDiT_XL_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=28, hidden_size=1152, patch_size=1, num_heads=16, **kwargs)


def LightningDiT_XL_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=28, hidden_size=1152, patch_size=2, num_heads=16, **kwargs)


def LightningDiT_L_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=24, hidden_size=1024, patch_size=1, num_heads=16, **kwargs)


def LightningDiT_L_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=24, hidden_size=1024, patch_size=2, num_heads=16, **kwargs)


def LightningDiT_B_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=12, hidden_size=768, patch_size=1, num_heads=12, **kwargs)


def LightningDiT_B_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=12, hidden_size=768, patch_size=2, num_heads=12, **kwargs)


def LightningDiT_Debug_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=2, hidden_size=64, patch_size=1, num_heads=4, **kwargs)


def LightningDiT_Debug_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=2, hidden_size=64, patch_size=2, num_heads=4, **kwargs)


def LightningDiT_Micro_1(**kwargs: Any) -> LightningDiT:
    return _build(depth=1, hidden_size=32, patch_size=1, num_heads=2, **kwargs)


def LightningDiT_Micro_2(**kwargs: Any) -> LightningDiT:
    return _build(depth=1, hidden_size=32, patch_size=2, num_heads=2, **kwargs)


LightningDiT_models: dict[str, Callable[..., LightningDiT]] = {
    "LightningDiT-1p6B/1": LightningDiT_1p6B_1,
    "LightningDiT-1p6B/2": LightningDiT_1p6B_2,
    "LightningDiT-1p0B/1": LightningDiT_1p0B_1,
    "LightningDiT-1p0B/2": LightningDiT_1p0B_2,
    "LightningDiT-XL/1": LightningDiT_XL_1,
    "LightningDiT-XL/2": LightningDiT_XL_2,
    "LightningDiT-L/1": LightningDiT_L_1,
    "LightningDiT-L/2": LightningDiT_L_2,
    "LightningDiT-B/1": LightningDiT_B_1,
    "LightningDiT-B/2": LightningDiT_B_2,
    "LightningDiT-Debug/1": LightningDiT_Debug_1,
    "LightningDiT-Debug/2": LightningDiT_Debug_2,
    "LightningDiT-Micro/1": LightningDiT_Micro_1,
    "LightningDiT-Micro/2": LightningDiT_Micro_2,
}
