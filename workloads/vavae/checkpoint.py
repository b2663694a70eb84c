"""Reading weight files and loading them strictly into the tokenizer.

The reference loader (``tokenizer/autoencoder.py::init_from_ckpt``) drops keys containing
'loss' and then loads with ``strict=False``, which silently ignores anything else that does not
fit. Here the caller names which key groups the module owns; everything else in the file is
ignored on purpose, and every missing, unexpected or mis-shaped owned key is reported by name.
"""

import io
import itertools
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
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


# --------------------------------------------------------------------------------------------
# Checkpoints from outside: the released VA-VAE, SD-VAE (LDM or diffusers layout), MAR KL-16
# --------------------------------------------------------------------------------------------
# How many differing keys an architecture-mismatch message names.
SHOWN_KEYS = 5


@dataclass(frozen=True)
class TokenizerCheckpoint:
    """A tokenizer file read into memory: its layout, as detected from its keys, and its tensors
    under our (= LDM) key names. `tensors` keeps every group of the file (projection, loss,
    foundation model); `inference()` is what an `AutoencoderKL` loads."""

    layout: str
    tensors: dict[str, torch.Tensor]

    def inference(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tensors.items() if k.startswith(INFERENCE_PREFIXES)}


def parse_weights(data: bytes, source: str) -> Mapping:
    """A safetensors or torch file's content (told apart by its bytes, so URIs need no suffix).

    A truncated or corrupt file raises ValueError naming `source`; torch files are read with
    `weights_only=True`, so no code in them runs.
    """
    if data[:2] == b"PK" or data[:1] == b"\x80":  # torch zip archive / legacy pickle
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{source} holds pickled Python objects that weights_only=True refuses; re-save "
                "just its state_dict (or convert it to .safetensors)"
            ) from error
        except (RuntimeError, EOFError, OSError) as error:
            # torch's first sentence says what failed; the rest is advice about the same.
            reason = str(error).splitlines()[0].split(". ")[0]
            raise ValueError(f"{source} is truncated or corrupt ({reason})") from error
    try:
        return load_safetensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ValueError(
            f"{source} is neither a torch nor a safetensors file, or is truncated ({error})"
        ) from error


def read_tokenizer_checkpoint(data: bytes, source: str) -> TokenizerCheckpoint:
    """Unwrap and name the layout of a tokenizer file (bytes of a `.pt`/`.ckpt`/`.safetensors`).

    Layouts: `vavae` (the released VA-VAE training checkpoint, or our `training_model` export:
    has `linear_proj`), `mar` (MAR's `kl16.ckpt`: weights under `model`), `diffusers` (SD-VAE as
    `diffusion_pytorch_model.safetensors`, renamed to LDM keys here), `ldm` (everything else with
    LDM keys: SD-VAE `.ckpt`/`.safetensors`, our `model.safetensors` export).
    """
    loaded = parse_weights(data, source)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{source} does not contain a state dict (got {type(loaded).__name__})")
    layout = None
    if isinstance(loaded.get("state_dict"), Mapping):  # Lightning checkpoints (VA-VAE, LDM)
        loaded = loaded["state_dict"]
    elif isinstance(loaded.get("model"), Mapping):  # MAR's kl16.ckpt
        loaded, layout = loaded["model"], "mar"
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith(INFERENCE_PREFIXES) for k in tensors):
        raise ValueError(
            f"{source} holds no tokenizer weights (no encoder./decoder. keys; top-level keys: "
            f"{sorted(map(str, loaded))[:SHOWN_KEYS]})"
        )
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in tensors):
        tensors, layout = diffusers_to_ldm(tensors), "diffusers"
    elif layout is None:
        layout = "vavae" if any(k.startswith("linear_proj.") for k in tensors) else "ldm"
    return TokenizerCheckpoint(layout, tensors)


def describe_autoencoder(tensors: Mapping[str, torch.Tensor]) -> str:
    """The architecture a set of LDM-named weights implies, for messages: `f16 ch 128 ch_mult
    (1, 1, 2, 2, 4) z 32 res_blocks 2 attn enc [4] dec [4]` (attention by level index)."""
    try:
        ch = tensors["encoder.conv_in.weight"].shape[0]
        levels = sorted({int(k.split(".")[2]) for k in tensors if k.startswith("encoder.down.")})
        mult = tuple(
            tensors[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels
        )
        blocks = len({k.split(".")[4] for k in tensors if k.startswith("encoder.down.0.block.")})
        z = tensors["quant_conv.weight"].shape[0] // 2
    except (KeyError, IndexError, ValueError):
        return "an unrecognised layout"
    enc = sorted(
        {int(k.split(".")[2]) for k in tensors if re.match(r"encoder\.down\.\d+\.attn\.", k)}
    )
    dec = sorted(
        {int(k.split(".")[2]) for k in tensors if re.match(r"decoder\.up\.\d+\.attn\.", k)}
    )
    return (
        f"f{2 ** (len(levels) - 1)} ch {ch} ch_mult {mult} z {z} res_blocks {blocks} "
        f"attention at levels enc {enc} dec {dec}"
    )


def architecture_mismatch(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]
) -> str | None:
    """None when `tensors` fit `model`'s keys under `prefixes` by name and shape, else a short
    account: counts and at most `SHOWN_KEYS` of the differing keys."""
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    given = {k: v for k, v in tensors.items() if k.startswith(prefixes)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in given.items()
        if k in expected and v.shape != expected[k].shape
    )
    if not (missing or unexpected or shapes):
        return None
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped"
    # Round-robin over the kinds, so the few keys shown tell what kind of mismatch it is.
    kinds = [[f"missing {k}" for k in missing], [f"unexpected {k}" for k in unexpected], shapes]
    named = [name for group in itertools.zip_longest(*kinds) for name in group if name]
    return f"{counts}: " + "; ".join(named[:SHOWN_KEYS])


def diffusers_to_ldm(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers `AutoencoderKL` state dict to LDM keys (diffusers'
    `convert_ldm_vae_checkpoint`, inverted); attention projections are Linear there, 1x1 convs
    here. Keys it does not know stay as they are, so a strict load names them."""
    levels = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("decoder.up_blocks."))
    out = {}
    for key, value in tensors.items():
        new = diffusers_key_to_ldm(key, levels)
        if ".attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


_DIFFUSERS_RULES = [
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\.", r"\1.mid.attn_1.\2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.", r"\1.mid.attn_1.proj_out."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
]


def diffusers_key_to_ldm(key: str, levels: int) -> str:
    """One diffusers key under its LDM name; `levels` = the number of resolution levels."""
    for pattern, replacement in _DIFFUSERS_RULES:
        key = re.sub(pattern, replacement, key)
    # diffusers lists decoder levels from the lowest resolution up; LDM indexes them by level.
    match = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$", key)
    if match:
        level = levels - 1 - int(match.group(1))
        if match.group(2) == "resnets":
            return f"decoder.up.{level}.block.{match.group(3)}.{match.group(4)}"
        return f"decoder.up.{level}.upsample.{match.group(4)}"
    return key
