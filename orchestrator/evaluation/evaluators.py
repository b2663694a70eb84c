"""Which network scores images, and its reference statistics.

With Inception weights (a local file, or `hub` = torch-fidelity's TF-ported file, downloaded once)
the metrics are the real FID/sFID/IS/precision/recall. The embedded default has no pretrained
Inception, so it trains a small CNN once on the dataset (cached by dataset identity) and reports
FD-proxy and class consistency in its feature space. That network is not the stand-in ViT the
VF loss aligns to, so the metric cannot reward alignment to itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.evaluation.naming import uses_inception
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage, local_copy
from orchestrator.storage.weights import inception_file

INCEPTION = "inception"
PROXY = "proxy"


@dataclasses.dataclass(frozen=True)
class EvaluatorSpec:
    """Plain data describing the evaluator, so Ray actors can rebuild it."""

    kind: str
    weights: str
    identity: dict

    def build(self, device: torch.device | str = "cpu") -> FeatureFn:
        return FeatureFn(self, device)

    @property
    def key(self) -> str:
        ident = self.identity
        return f"{ident['name']}=={ident['version']}#sha256:{ident['weights_sha256'][:16]}"


class FeatureFn:
    """uint8 NHWC images -> named feature arrays (`pool`, `logits`, `spatial` or `proxy`, `pred`)."""

    def __init__(self, spec: EvaluatorSpec, device: torch.device | str = "cpu"):
        self.spec = spec
        # The network runs where its actor's resources are (the actor's GPU on a GPU cluster);
        # images arrive as host arrays and features leave as host arrays.
        self.device = torch.device(device)
        if spec.kind == INCEPTION:
            from workloads.metrics.inception import InceptionFeatures

            self.network = InceptionFeatures(local_copy(spec.weights))
        else:
            from workloads.metrics.proxy import load_proxy

            self.network = load_proxy(local_copy(spec.weights)).model
        self.network.to(device)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        if self.spec.kind == INCEPTION:
            out = self.network(x)
            return {
                "pool": out.pool.double().cpu().numpy(),
                "logits": out.logits.double().cpu().numpy(),
                "spatial": out.spatial.double().cpu().numpy(),
            }
        x = x.float() / 127.5 - 1.0
        features = self.network.features(x)
        return {
            "proxy": features.double().cpu().numpy(),
            "pred": self.network.head(features).argmax(dim=1).cpu().numpy(),
        }


def prepare_evaluator(
    cfg: ExperimentConfig, storage: Storage, dataset_root: str, dataset_key: str
) -> EvaluatorSpec:
    """Driver side, once per dataset: locate (or train) the evaluator network."""
    from workloads.metrics.inception import sha256_file

    if uses_inception(cfg):
        import torch_fidelity

        from workloads.metrics.inception import EVALUATOR_NAME

        path = inception_file(cfg.evaluation.inception_weights)
        identity = {
            "name": EVALUATOR_NAME,
            "version": torch_fidelity.__version__,
            "weights_sha256": sha256_file(path),
        }
        return EvaluatorSpec(INCEPTION, str(path), identity)
    from workloads.metrics.proxy import load_or_train_proxy, proxy_cache_dir

    # Trained in-process from the PNG tree, kept under `models/` in storage (and, for object
    # storage, in the local cache); actors load it through `local_copy`.
    resolution = cfg.dataset.resolution
    found = {}

    def build(cache: Path) -> Path:
        from orchestrator.sweep.budget import computing_here

        with computing_here():
            found["proxy"] = load_or_train_proxy(
                Path(dataset_root), cache, dataset_key, resolution=resolution
            )
        return proxy_cache_dir(cache, dataset_key, resolution=resolution)

    _, location = storage.built_file(Artifacts.proxy_evaluator(dataset_key), build)
    return EvaluatorSpec(PROXY, location, dataclasses.asdict(found["proxy"].identity))
