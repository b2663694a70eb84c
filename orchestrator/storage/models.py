"""Model construction from a resolved config: one place for every stage that builds a model."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from orchestrator.config import ExperimentConfig, latent_grid, to_dict
from orchestrator.storage.store import open_input

if TYPE_CHECKING:  # workloads imports torch: stage code imports it when it builds a model
    from workloads.families import TokenizerSpec


def autoencoder_kwargs(cfg: ExperimentConfig) -> dict:
    """`AutoencoderKL` constructor arguments of the configured tokenizer.

    `resolution` is not in the arch config but places the attention blocks (at the *nominal*
    resolutions of `attn_resolutions`), so it must be the resolution the tokenizer trained at.
    """
    return {**to_dict(cfg.tokenizer.arch), "resolution": cfg.dataset.resolution}


def foundation_architecture(name: str, resolution: int, grid: int) -> tuple[str, dict]:
    """(timm name, timm kwargs) of the foundation model `tokenizer.vf.foundation` names: a preset
    (`dinov2`, `mae`), any timm ViT, or the stand-in as it is trained for this grid (a trained
    stand-in file carries the same in its sidecar)."""
    if name == "standin":
        from workloads.standin import TIMM_NAME, standin_timm_kwargs

        return TIMM_NAME, standin_timm_kwargs(image_size=resolution, patch_size=resolution // grid)
    from workloads.foundation import foundation_timm

    return foundation_timm(name)


def tokenizer_spec(cfg: ExperimentConfig) -> TokenizerSpec:
    """The configured tokenizer as its family builds it (`TokenizerSpec.build`) in every stage.

    A ViT decoder (RAE) sits on the frozen foundation model `tokenizer.vf` names, whose timm
    architecture is known from the config alone (the stand-in's is the one it is trained with).
    """
    from workloads.families import TokenizerSpec

    tok = cfg.tokenizer
    if tok.decoder is None:
        return TokenizerSpec(tok.family, autoencoder_kwargs(cfg))
    grid = latent_grid(cfg)
    timm_name, timm_kwargs = foundation_architecture(
        tok.vf.foundation, cfg.dataset.resolution, grid
    )
    encoder = {"timm_name": timm_name, "timm_kwargs": timm_kwargs, "input_norm": tok.vf.input_norm}
    return TokenizerSpec(
        tok.family,
        {
            "encoder": encoder,
            "grid": grid,
            "decoder": to_dict(tok.decoder),
            "embed_dim": tok.arch.embed_dim,
        },
    )


def generator_kwargs(cfg: ExperimentConfig) -> dict:
    """LightningDiT constructor keywords (beyond the registry size) of a resolved config."""
    model = cfg.generator.model
    if cfg.dataset.num_classes is None:
        raise ValueError(
            "dataset.num_classes must be known (set it, or resolve it from the ingest)"
        )
    kwargs = {
        "input_size": model.input_size,
        "in_channels": model.in_channels,
        "num_classes": cfg.dataset.num_classes,
        "class_dropout_prob": model.class_dropout_prob,
        "learn_sigma": model.learn_sigma,
        "use_qknorm": model.use_qknorm,
        "use_swiglu": model.use_swiglu,
        "use_rope": model.use_rope,
        "use_rmsnorm": model.use_rmsnorm,
        "wo_shift": model.wo_shift,
    }
    if model.head is not None:  # DiT^DH: the named size is the trunk (workloads/dit/registry.py)
        head = model.head
        kwargs["head"] = {"depth": head.depth, "width": head.width, "heads": head.heads}
    return kwargs


def build_generator(cfg: ExperimentConfig):
    from workloads.dit import LightningDiT_models

    return LightningDiT_models[cfg.generator.model.name](**generator_kwargs(cfg))


def read_weights(path: str):
    """(tensors, sha256) of a safetensors file given as a local path or a pyarrow-readable URI.

    Stages hand weights to Ray actors through the object store, so no node needs the file.
    """
    from safetensors.torch import load as load_safetensors

    with open_input(path) as stream:
        data = stream.read()
    return load_safetensors(data), hashlib.sha256(data).hexdigest()
