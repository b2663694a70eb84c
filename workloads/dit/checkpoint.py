"""Strict loading of LightningDiT weights: released `.pt` checkpoints, bare state dicts, safetensors.

The released files (`lightningdit-xl-imagenet256-*.pt`) follow the reference train.py layout
`{"model", "ema", "opt", "config"}`; sampling uses `"ema"`. The reference `inference.py` loads with
`strict=True`, so the frozen `pos_embed` and the RoPE buffers are part of every compatible dict.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

# Wrapper prefixes added by DDP (`module.`, also stripped by the reference train.py on resume)
# and by torch.compile (`_orig_mod.`).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CHECKPOINT_ENTRIES = ("ema", "model")


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's keys or shapes differ from the model's state dict."""


@dataclass(frozen=True)
class LoadReport:
    """What was loaded: the file, the top-level entry used (None for a bare dict), the tensor count."""

    source: str
    entry: str | None
    num_tensors: int


def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def _read_file(path: Path, weights_only: bool) -> Mapping:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"{path} holds non-tensor objects that weights_only=True refuses ({err}). "
            "If you trust the file, load it with weights_only=False."
        ) from err


def select_state_dict(
    checkpoint: Mapping, entry: str = "ema"
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Pick the model weights out of a loaded checkpoint.

    `entry` ("ema" or "model") is used when the checkpoint has it; a mapping whose values are all
    tensors is taken as a bare state dict. Wrapper prefixes are stripped from every key.
    """
    if entry not in CHECKPOINT_ENTRIES:
        raise ValueError(f"entry must be one of {CHECKPOINT_ENTRIES}, got {entry!r}")
    if entry in checkpoint and isinstance(checkpoint[entry], Mapping):
        chosen, used = checkpoint[entry], entry
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        chosen, used = checkpoint, None
    else:
        raise KeyError(
            f"checkpoint has no {entry!r} entry and is not a bare state dict; "
            f"top-level keys: {sorted(map(str, checkpoint.keys()))}"
        )
    return {_strip_wrapper_prefixes(k): v for k, v in chosen.items()}, used


def _describe(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches ({len(wrong_shape)}): {_describe(wrong_shape)}")
    if problems:
        raise CheckpointMismatchError("; ".join(problems))


def load_lightningdit_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping,
    entry: str = "ema",
    weights_only: bool = True,
) -> LoadReport:
    """Load weights into `model` strictly from a file path or an already loaded mapping.

    Accepts a released/`train.py` checkpoint (choose `entry="ema"` or `"model"`), a bare state
    dict, or a `.safetensors` file. Raises CheckpointMismatchError listing keys by name.
    """
    if isinstance(source, Mapping):
        checkpoint, name = source, "<mapping>"
    else:
        checkpoint, name = _read_file(Path(source), weights_only), str(source)
    state_dict, used = select_state_dict(checkpoint, entry)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return LoadReport(source=name, entry=used, num_tensors=len(state_dict))
