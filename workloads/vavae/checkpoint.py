"""Reading weight files and loading them strictly into the tokenizer.

The reference loader (``tokenizer/autoencoder.py::init_from_ckpt``) drops keys containing
'loss' and then loads with ``strict=False``, which silently ignores anything else that does not
fit. Here the caller names which key groups the module owns; everything else in the file is
ignored on purpose, and every missing, unexpected or mis-shaped owned key is reported by name.
"""

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

# Key groups of the inference AutoencoderKL (the "inference" group of vavae_f16d32_schema.json).
INFERENCE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or torch (``.pt``/``.pth``/``.ckpt``/``.bin``) state dict on CPU.

    A ``{"state_dict": ...}`` wrapper (Lightning checkpoints) is unwrapped. Torch files are read
    with ``weights_only=True``, so no arbitrary code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"unsupported weights file {path}: expected .safetensors or one of {TORCH_SUFFIXES}"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds pickled Python objects that weights_only=True refuses; re-save just its "
            "state_dict (or convert it to .safetensors)"
        ) from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} does not contain a state dict (got {type(loaded).__name__})")
    return dict(loaded)


def load_owned_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    owned_prefixes: Iterable[str],
    source: str = "state dict",
) -> None:
    """Load the key groups ``owned_prefixes`` of ``state_dict`` into ``module``, strictly per group.

    Keys outside those groups, in the file (foundation model, LPIPS, optimizer leftovers) or in the
    module (e.g. a fresh discriminator when only the autoencoder is loaded), are left alone. Every
    owned key must match by name and shape; one ValueError names all that do not.
    """
    owned_prefixes = tuple(owned_prefixes)
    selected = {k: v for k, v in state_dict.items() if k.startswith(owned_prefixes)}
    expected = {k: v for k, v in module.state_dict().items() if k.startswith(owned_prefixes)}
    missing = sorted(set(expected) - set(selected))
    unexpected = sorted(set(selected) - set(expected))
    mis_shaped = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in selected.items()
        if k in expected and v.shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"cannot load {source} into {type(module).__name__}: " + "; ".join(problems)
        )
    # strict=False only tolerates the module's non-owned groups; the owned ones were checked above.
    module.load_state_dict(selected, strict=False)


def load_autoencoder_weights(
    model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]
) -> None:
    """Load exactly the inference keys (encoder/decoder/quant convs) from a file or state dict.

    Accepts the released tokenizer ``.pt``, a Lightning training ``.ckpt`` (its ``linear_proj``,
    ``loss.*`` and ``foundation_model.*`` keys are ignored) or our own ``.safetensors`` export.
    """
    if isinstance(weights, Mapping):
        load_owned_state_dict(model, weights, INFERENCE_PREFIXES)
    else:
        load_owned_state_dict(
            model, read_state_dict_file(weights), INFERENCE_PREFIXES, str(weights)
        )
