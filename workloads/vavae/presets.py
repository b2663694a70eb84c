"""Named tokenizer sizes: the paper's f16 tokenizers and small presets for CPU work and tests."""

from typing import Any

from workloads.vavae.model import AutoencoderKL


def _paper_f16(embed_dim: int) -> dict[str, Any]:
    # vavae/configs/f16d32_vfdinov2.yaml: 5 levels (f16), attention only at 16x16 (last level).
    return {
        "embed_dim": embed_dim,
        "ch": 128,
        "ch_mult": (1, 1, 2, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "resolution": 256,
    }


vavae_presets: dict[str, dict[str, Any]] = {
    "f16d16": _paper_f16(16),
    "f16d32": _paper_f16(32),
    "f16d64": _paper_f16(64),
    # 32 px images -> 8x8x8 latents (f4); attention at the lowest level, like the release.
    # 32 channels is the minimum width: GroupNorm uses 32 groups.
    "tiny": {
        "embed_dim": 8,
        "ch": 32,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (8,),
        "resolution": 32,
    },
    # Smallest sensible model for unit tests: 32 px -> 16x16x4 (f2).
    "micro": {
        "embed_dim": 4,
        "ch": 32,
        "ch_mult": (1, 1),
        "num_res_blocks": 1,
        "attn_resolutions": (16,),
        "resolution": 32,
    },
}


def preset_kwargs(preset: str, **overrides: Any) -> dict[str, Any]:
    """Constructor kwargs of ``preset`` with ``overrides`` applied (e.g. ``embed_dim=16``)."""
    if preset not in vavae_presets:
        raise ValueError(f"unknown VA-VAE preset {preset!r}; choose from {sorted(vavae_presets)}")
    return {**vavae_presets[preset], **overrides}


def build_autoencoder(preset: str, **overrides: Any) -> AutoencoderKL:
    """Build the inference :class:`AutoencoderKL` of a named preset."""
    return AutoencoderKL(**preset_kwargs(preset, **overrides))
