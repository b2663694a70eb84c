"""InceptionV3 features through torch-fidelity: pool3 (FID, precision/recall), logits (IS), spatial (sFID).

The network is torch-fidelity's TF-compatible port of the 2015-12-05 Inception graph that ADM's
evaluator runs, with weights read from a local file (nothing is ever downloaded). Numbers are
therefore close to, not bit-identical with, ADM's TensorFlow evaluator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from workloads.metrics.eval_spec import EvaluatorIdentity
from workloads.metrics.images import as_nchw_tensor, to_uint8

EVALUATOR_NAME = "torch-fidelity-inception-v3-compat"
# ADM's sFID reads "mixed_6/conv:0": the ReLU output of the 1x1 branch of TF block mixed_6, which
# torch-fidelity (converted from the same graph) names Mixed_6d.branch1x1 (mixed_3 = Mixed_6a).
SPATIAL_LAYER = "Mixed_6d.branch1x1"
# ADM keeps the first 7 of its 192 channels, flattened in TF's NHWC order: 17 * 17 * 7 = 2023.
SPATIAL_CHANNELS = 7
_FEATURES = ("2048", "logits_unbiased")


@dataclasses.dataclass
class InceptionOutputs:
    pool: torch.Tensor  # (B, 2048) pool3
    logits: torch.Tensor  # (B, 1008) without the fc bias, as ADM's Inception Score uses
    spatial: torch.Tensor  # (B, 2023) sFID features


class _RandomInitInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's network that tolerates the empty checkpoint used for `random_init`."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # torch-fidelity's constructor always loads a checkpoint (downloading one if no path is
        # given); an empty one loaded non-strictly leaves the random initialisation in place.
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def _empty_checkpoint() -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    return buffer


def _seeded_random_init(network: nn.Module, seed: int) -> None:
    """He-normal convolutions so activations neither vanish nor explode through 90+ layers."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (the evaluator-identity checksum of a weights file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(state_dict: dict[str, torch.Tensor]) -> str:
    """Checksum of tensor names and values (for weights that have no file, e.g. random init)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class InceptionFeatures(nn.Module):
    """Frozen InceptionV3 returning pool3, unbiased logits and ADM-style spatial features.

    Args:
        weights_path: the TF-ported ``pt_inception-2015-12-05`` state dict (torch-fidelity's
            ``weights-inception-2015-12-05-6726825d.pth``); its sha256 enters the identity.
        random_init: build untrained weights instead (tests, CPU benchmarks); never for reporting.
        seed: seed of the random initialisation.
    """

    def __init__(
        self, weights_path: Path | None = None, *, random_init: bool = False, seed: int = 0
    ):
        super().__init__()
        if (weights_path is None) == (not random_init):
            raise ValueError("pass exactly one of weights_path or random_init=True")
        if random_init:
            self.network = _RandomInitInceptionV3(
                "inception-v3-compat",
                list(_FEATURES),
                feature_extractor_weights_path=_empty_checkpoint(),
            )
            _seeded_random_init(self.network, seed)
            name, checksum = (
                f"{EVALUATOR_NAME}-random-init",
                sha256_state_dict(self.network.state_dict()),
            )
        else:
            self.network = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                list(_FEATURES),
                feature_extractor_weights_path=str(weights_path),
            )
            name, checksum = EVALUATOR_NAME, sha256_file(Path(weights_path))
        self.identity = EvaluatorIdentity(name, torch_fidelity.__version__, checksum)
        self.eval()
        self._spatial: torch.Tensor | None = None
        self.network.get_submodule(SPATIAL_LAYER).register_forward_hook(self._keep_spatial)

    def train(self, mode: bool = True) -> InceptionFeatures:
        # Frozen evaluator: batch-norm must keep its running statistics whatever the caller does.
        return super().train(False)

    def _keep_spatial(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._spatial = output

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> InceptionOutputs:
        """`images`: (B, 3, H, W) uint8, or float in [-1, 1]; any size (resized to 299 inside)."""
        pool, logits = self.network(to_uint8(images))
        spatial = self._spatial[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1).float()
        self._spatial = None
        return InceptionOutputs(pool=pool, logits=logits, spatial=spatial)

    def extract(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 50
    ) -> dict[str, np.ndarray]:
        """Features of many images in batches: ``{"pool", "logits", "spatial"}`` float64 arrays.

        `images`: (N, H, W, 3) uint8 arrays (PNG / ADM ``arr_0`` layout) or (N, 3, H, W) tensors.
        The names match the reference cache's (``pool`` <-> ``mu``/``sigma``, ``spatial`` <->
        ``mu_s``/``sigma_s``).
        """
        images = as_nchw_tensor(images)
        device = next(self.network.parameters()).device
        chunks = [
            self(images[start : start + batch_size].to(device))
            for start in range(0, len(images), batch_size)
        ]
        return {
            name: torch.cat([getattr(chunk, name) for chunk in chunks]).double().cpu().numpy()
            for name in ("pool", "logits", "spatial")
        }
