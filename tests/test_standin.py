"""Stand-in foundation model: a small timm ViT trained on the embedded dataset, cached by identity,
with a JSON sidecar that rebuilds it (patch grid = tokenizer latent grid)."""

import json
import time

import pytest
import timm
import torch
from safetensors.torch import load_file

from workloads.datasets.embedded import EmbeddedDatasetSpec, read_split, write_embedded_dataset
from workloads.metrics.classifier_training import accuracy, as_model_input
from workloads.standin import SIDECAR_FILE, load_standin_spec, train_standin_vit

SPEC = EmbeddedDatasetSpec()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    root = write_embedded_dataset(tmp_path_factory.mktemp("data") / "embedded", SPEC)
    cache = tmp_path_factory.mktemp("cache")
    started = time.perf_counter()
    weights = train_standin_vit(root, cache, SPEC.identity(), patch_size=4)
    seconds = time.perf_counter() - started
    sidecar = json.loads(weights.with_name(SIDECAR_FILE).read_text())
    print(f"stand-in ViT: trained in {seconds:.1f} s, val accuracy {sidecar['val_accuracy']:.3f}")
    return root, cache, weights, sidecar


def test_sidecar_describes_the_model(trained):
    _, _, weights, sidecar = trained
    assert weights.suffix == ".safetensors"
    assert sidecar["dataset_identity"] == SPEC.identity()
    assert sidecar["num_classes"] == SPEC.num_classes
    assert sidecar["val_accuracy"] >= 0.7
    name, kwargs = load_standin_spec(weights)
    assert (name, kwargs) == (sidecar["timm_name"], sidecar["timm_kwargs"])
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["img_size"] // kwargs["patch_size"] == 8


def test_weights_rebuild_the_trained_network(trained):
    root, _, weights, sidecar = trained
    name, kwargs = load_standin_spec(weights)
    model = timm.create_model(name, pretrained=False, num_classes=sidecar["num_classes"], **kwargs)
    model.load_state_dict(load_file(weights))
    val_images, val_labels, _ = read_split(root, "val")
    reloaded = accuracy(model, as_model_input(val_images), torch.from_numpy(val_labels))
    assert reloaded == pytest.approx(sidecar["val_accuracy"])


def test_headless_trunk_gives_the_latent_grid(trained):
    # What FoundationModel does: drop head.* and read the patch tokens.
    _, _, weights, _ = trained
    name, kwargs = load_standin_spec(weights)
    trunk = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("head.")}
    trunk.load_state_dict(state)
    with torch.no_grad():
        tokens = trunk.forward_features(torch.zeros(2, 3, 32, 32))
    assert tokens.shape == (2, trunk.num_prefix_tokens + 8 * 8, kwargs["embed_dim"])


def test_second_call_reuses_the_cache(trained):
    root, cache, weights, _ = trained
    mtime = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert train_standin_vit(root, cache, SPEC.identity(), patch_size=4) == weights
    assert time.perf_counter() - started < 5
    assert weights.stat().st_mtime_ns == mtime
