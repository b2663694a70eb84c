"""Proxy evaluator for the embedded default dataset (no pretrained Inception exists for it).

A small CNN classifier is trained once on the embedded train split and cached by dataset identity.
It reports two honestly named metrics, never "FID":

- ``fd_proxy``: Fréchet distance in the CNN's penultimate feature space (reference: train split,
  as ADM's reference batch is ImageNet train);
- ``class_consistency``: fraction of generated samples the CNN assigns to their conditioning label.

It is a CNN on purpose: the stand-in foundation model that the VF loss aligns to is a ViT, and a
generator should not be scored by the network its tokenizer was aligned with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from workloads.datasets.embedded import read_split
from workloads.metrics.atomic_dir import publish_directory
from workloads.metrics.classifier_training import (
    FitConfig,
    as_model_input,
    predict_labels,
    train_on_image_folder,
)
from workloads.metrics.eval_spec import EvaluatorIdentity
from workloads.metrics.frechet import FeatureStats, frechet_distance
from workloads.metrics.images import features_in_batches
from workloads.metrics.inception import sha256_file
from workloads.metrics.reference import reference_stats

PROXY_NAME = "proxy-cnn"
# Bump when the architecture or training recipe changes: cached evaluators are then retrained.
PROXY_VERSION = "1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
# 12 epochs reach ~98 % val accuracy on the default embedded set in ~15 s on 2 quiet cores.
DEFAULT_FIT = FitConfig(epochs=12, batch_size=64, lr=3e-3, weight_decay=5e-4)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ProxyCNN(nn.Module):
    """Three conv stages (width, 2x, 4x) with global average pooling; any input size >= 16 px."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(
            _conv_block(3, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate (B, 4 * width) features: the space FD-proxy is measured in."""
        return self.trunk(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@dataclasses.dataclass
class ProxyEvaluator:
    """A trained proxy CNN plus its identity; images may be uint8 NHWC arrays or NCHW tensors."""

    model: ProxyCNN
    identity: EvaluatorIdentity
    val_accuracy: float

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        return features_in_batches(
            lambda batch: self.model.features(as_model_input(batch)), images, batch_size
        )

    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        return predict_labels(self.model, as_model_input(images)).numpy()

    def class_consistency(self, images: np.ndarray | torch.Tensor, labels: np.ndarray) -> float:
        """Fraction of `images` classified as the label they were generated for."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))

    def fd_proxy(self, reference: FeatureStats, images: np.ndarray | torch.Tensor) -> float:
        return frechet_distance(reference, FeatureStats.from_features(self.features(images)))

    def generation_metrics(
        self, reference: FeatureStats, images: np.ndarray | torch.Tensor, labels: np.ndarray
    ) -> dict[str, float]:
        return {
            "fd_proxy": self.fd_proxy(reference, images),
            "class_consistency": self.class_consistency(images, labels),
        }


def proxy_cache_dir(
    cache_dir: Path,
    dataset_identity: str,
    width: int = 32,
    fit: FitConfig = DEFAULT_FIT,
    resolution: int | None = None,
) -> Path:
    """Directory of the proxy evaluator for `dataset_identity` and this recipe under `cache_dir`."""
    recipe = json.dumps([width, dataclasses.asdict(fit), resolution], sort_keys=True)
    recipe_hash = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{PROXY_NAME}-v{PROXY_VERSION}-{dataset_identity}-{recipe_hash}"


def load_proxy(directory: Path) -> ProxyEvaluator:
    """Rebuild a saved proxy evaluator from its directory (weights + JSON config)."""
    config = json.loads((directory / CONFIG_FILE).read_text())
    model = ProxyCNN(**config["arch_kwargs"])
    model.load_state_dict(load_file(directory / WEIGHTS_FILE))
    model.eval().requires_grad_(False)
    identity = EvaluatorIdentity(PROXY_NAME, PROXY_VERSION, sha256_file(directory / WEIGHTS_FILE))
    return ProxyEvaluator(model=model, identity=identity, val_accuracy=config["val_accuracy"])


def load_or_train_proxy(
    dataset_root: Path,
    cache_dir: Path,
    dataset_identity: str,
    width: int = 32,
    fit: FitConfig = DEFAULT_FIT,
    resolution: int | None = None,
) -> ProxyEvaluator:
    """The proxy evaluator for `dataset_identity`: loaded from `cache_dir`, or trained and saved there.

    `resolution`: train on the ADM-cropped images the generator produces (None = as stored).
    """
    directory = proxy_cache_dir(cache_dir, dataset_identity, width, fit, resolution)
    if (directory / CONFIG_FILE).exists():
        return load_proxy(directory)
    model, metadata = train_on_image_folder(
        lambda num_classes: ProxyCNN(num_classes, width), Path(dataset_root), fit, resolution
    )
    arch_kwargs = {"num_classes": model.head.out_features, "width": width}
    metadata.update(
        arch="ProxyCNN",
        arch_kwargs=arch_kwargs,
        dataset_identity=dataset_identity,
        proxy_version=PROXY_VERSION,
    )

    def write(staging: Path) -> None:
        save_file(model.state_dict(), staging / WEIGHTS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    publish_directory(directory, write, complete_file=CONFIG_FILE)
    return load_proxy(directory)


def proxy_reference_stats(
    evaluator: ProxyEvaluator,
    dataset_root: Path,
    dataset_identity: str,
    cache_dir: Path,
    split: str = "train",
) -> FeatureStats:
    """Cached proxy-feature statistics of a dataset split (keyed by data and evaluator identity)."""
    key = f"{dataset_identity}/{split}|{evaluator.identity.key()}"
    stats = reference_stats(
        cache_dir, key, lambda: {"proxy": evaluator.features(read_split(dataset_root, split)[0])}
    )
    return stats["proxy"]
