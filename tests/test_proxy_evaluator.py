"""Proxy evaluator on the embedded dataset: trains fast on 2 threads, >= 90 % held-out accuracy,
is cached by dataset identity and reports fd_proxy / class_consistency (never "FID")."""

import json
import time

import numpy as np
import pytest
import torch

from workloads.datasets.embedded import EmbeddedDatasetSpec, read_split, write_embedded_dataset
from workloads.metrics.eval_spec import metric_label
from workloads.metrics.proxy import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_or_train_proxy,
    proxy_reference_stats,
)

SPEC = EmbeddedDatasetSpec()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    root = write_embedded_dataset(tmp_path_factory.mktemp("data") / "embedded", SPEC)
    cache = tmp_path_factory.mktemp("cache")
    started = time.perf_counter()
    evaluator = load_or_train_proxy(root, cache, SPEC.identity())
    seconds = time.perf_counter() - started
    print(f"proxy CNN: trained in {seconds:.1f} s, val accuracy {evaluator.val_accuracy:.3f}")
    return root, cache, evaluator, seconds


def test_trains_quickly_to_high_held_out_accuracy(trained):
    root, _, evaluator, seconds = trained
    assert evaluator.val_accuracy >= 0.9
    val_images, val_labels, _ = read_split(root, "val")
    assert evaluator.class_consistency(val_images, val_labels) == pytest.approx(
        evaluator.val_accuracy
    )
    # Budget is 2 min on 2 quiet cores (~20 s measured); the slack absorbs a shared machine.
    assert seconds < 240, f"proxy training took {seconds:.0f} s"


def test_cached_evaluator_is_reused(trained):
    root, cache, evaluator, _ = trained
    (directory,) = [p for p in cache.iterdir() if SPEC.identity() in p.name]
    metadata = json.loads((directory / CONFIG_FILE).read_text())
    assert metadata["dataset_identity"] == SPEC.identity()
    assert metadata["arch_kwargs"]["num_classes"] == SPEC.num_classes
    weights_mtime = (directory / WEIGHTS_FILE).stat().st_mtime_ns
    started = time.perf_counter()
    again = load_or_train_proxy(root, cache, SPEC.identity())
    assert time.perf_counter() - started < 5
    assert (directory / WEIGHTS_FILE).stat().st_mtime_ns == weights_mtime
    assert again.identity == evaluator.identity and again.identity.name == "proxy-cnn"


# Noise images collapse many CNN features to zero: a singular covariance is expected there.
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_generation_metrics_separate_real_from_broken_samples(trained, tmp_path):
    root, _, evaluator, _ = trained
    reference = proxy_reference_stats(evaluator, root, SPEC.identity(), tmp_path)
    val_images, val_labels, _ = read_split(root, "val")
    good = evaluator.generation_metrics(reference, val_images, val_labels)
    noise = np.random.default_rng(0).integers(0, 256, size=val_images.shape, dtype=np.uint8)
    bad = evaluator.generation_metrics(reference, noise, val_labels)
    assert set(good) == {"fd_proxy", "class_consistency"}
    assert good["fd_proxy"] < 0.2 * bad["fd_proxy"]
    assert good["class_consistency"] > 0.9 > 0.3 > bad["class_consistency"]
    assert metric_label("fd_proxy", len(val_images)) == "FD-proxy-500"
