"""Equality with the kept library: on the same PNG folders and the same Inception network, our
FID, IS and precision/recall equal torch-fidelity's `calculate_metrics` within 1e-4 relative.

The network is torch-fidelity's own InceptionV3 with seeded random weights written to a file,
loaded by both sides from that file: the computation is what is compared, not the weights.
CPU only, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from workloads.metrics.frechet import FeatureStats, frechet_distance
from workloads.metrics.inception import InceptionFeatures
from workloads.metrics.inception_score import inception_score, inception_score_splits
from workloads.metrics.precision_recall import precision_recall

IMAGES = 24


def _write_folder(folder: Path, seed: int, brightness: int) -> np.ndarray:
    """Blurry blobs on a tinted background: structured enough for non-degenerate features."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    images = []
    for index in range(IMAGES):
        canvas = np.full((32, 32, 3), brightness, np.float64) + rng.normal(0, 20, size=(1, 1, 3))
        for _ in range(3):
            y, x = rng.integers(0, 32, size=2)
            yy, xx = np.mgrid[:32, :32]
            blob = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * rng.uniform(2, 6) ** 2))
            canvas += blob[..., None] * rng.uniform(-120, 120, size=3)
        image = np.clip(canvas + rng.normal(0, 8, size=canvas.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{index:03d}.png")
        images.append(image)
    return np.stack(images)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    weights = root / "inception-random.pth"
    torch.save(InceptionFeatures(random_init=True, seed=0).network.state_dict(), weights)
    generated = _write_folder(root / "generated", seed=1, brightness=110)
    reference = _write_folder(root / "reference", seed=2, brightness=140)
    return root, weights, generated, reference


def test_fid_is_precision_recall_equal_torch_fidelity(setup):
    root, weights, generated, reference = setup
    theirs = torch_fidelity.calculate_metrics(
        input1=str(root / "generated"),
        input2=str(root / "reference"),
        cuda=False,
        fid=True,
        isc=True,
        prc=True,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights),
        isc_splits=inception_score_splits(IMAGES),
        samples_shuffle=False,
        cache=False,
        verbose=False,
        batch_size=IMAGES,
    )
    network = InceptionFeatures(weights)
    ours_generated, ours_reference = network.extract(generated), network.extract(reference)
    fid = frechet_distance(
        FeatureStats.from_features(ours_reference["pool"]),
        FeatureStats.from_features(ours_generated["pool"]),
    )
    score, _ = inception_score(ours_generated["logits"])
    precision, recall = precision_recall(ours_reference["pool"], ours_generated["pool"])

    assert fid > 1.0  # two different folders: a test of equality, not of zeros
    assert fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert score == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert precision == pytest.approx(theirs["precision"], rel=1e-4)
    assert recall == pytest.approx(theirs["recall"], rel=1e-4)
