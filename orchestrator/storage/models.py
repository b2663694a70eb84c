"""Model construction from a resolved config: one place for every stage that builds a model."""

from __future__ import annotations

import hashlib

from orchestrator.config import ExperimentConfig, to_dict
from orchestrator.storage.store import open_input


def autoencoder_kwargs(cfg: ExperimentConfig) -> dict:
    """`AutoencoderKL` constructor arguments of the configured tokenizer.

    `resolution` is not in the arch config but places the attention blocks (at the *nominal*
    resolutions of `attn_resolutions`), so it must be the resolution the tokenizer trained at.
    """
    return {**to_dict(cfg.tokenizer.arch), "resolution": cfg.dataset.resolution}


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


def build_autoencoder(cfg: ExperimentConfig, weights: str | None = None):
    """The tokenizer's `AutoencoderKL`, with exported inference weights loaded strictly if given."""
    from workloads.vavae import AutoencoderKL, load_autoencoder_weights

    model = AutoencoderKL(**autoencoder_kwargs(cfg))
    if weights is not None:
        load_autoencoder_weights(model, weights)
    return model.eval()


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
