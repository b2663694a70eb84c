"""Metrics: Fréchet distance, IS, precision/recall, tokenizer metrics, Inception wrapper, EvalSpec,
reference-statistics cache and latent uniformity. CPU only, random weights, no downloads."""

import math

import numpy as np
import pytest
import torch

from workloads.metrics.eval_spec import (
    EvalSpec,
    EvaluatorIdentity,
    metric_label,
    require_label,
)
from workloads.metrics.frechet import FeatureStats, fid_from_features, frechet_distance
from workloads.metrics.inception import InceptionFeatures, sha256_file
from workloads.metrics.inception_score import inception_score
from workloads.metrics.precision_recall import precision_recall
from workloads.metrics.reconstruction import lpips_distance, psnr, rfid, ssim
from workloads.metrics.reference import reference_stats
from workloads.metrics.suite import inception_generation_metrics
from workloads.metrics.uniformity import gini_coefficient, latent_uniformity


def _random_features(seed: int, n: int = 400, d: int = 16, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def _independent_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Tr sqrt(S1 S2) as the sum of sqrt-eigenvalues of sqrt(S1) S2 sqrt(S1) (symmetric PSD)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigvals, eigvecs = np.linalg.eigh(s1)
    sqrt_s1 = (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T
    inner = np.linalg.eigvalsh(sqrt_s1 @ s2 @ sqrt_s1)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


# ------------------------------------------------------------------ Fréchet distance, IS, P/R


def test_fid_of_a_set_with_itself_is_zero():
    features = _random_features(0)
    assert abs(fid_from_features(features, features)) < 1e-6


def test_fid_matches_an_independent_computation():
    a, b = _random_features(1), _random_features(2, shift=0.3)
    expected = _independent_frechet(a, b)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-4)


def _torch_fidelity_frechet(a: np.ndarray, b: np.ndarray) -> float:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    return fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]


@pytest.mark.parametrize(("n", "d"), [(10, 32), (50, 256), (63, 64)])
def test_fid_is_exact_on_rank_deficient_covariances(n, d):
    # Fewer samples than dimensions: both covariances are rank deficient (rank n - 1 < d).
    a, b = _random_features(3, n=n, d=d), _random_features(4, n=n, d=d, shift=0.2)
    value = fid_from_features(a, b)
    assert value == pytest.approx(_independent_frechet(a, b), rel=1e-5)
    assert value == pytest.approx(_torch_fidelity_frechet(a, b), rel=1e-4)


def test_fid_is_exact_on_near_singular_covariances():
    # Dead features (constant columns, as ReLU units of a random network give) and features whose
    # variance is 1e-16 of the others: the product S_a S_b is singular to machine precision.
    a, b = _random_features(7, n=500, d=24), _random_features(8, n=500, d=24, shift=0.1)
    for x in (a, b):
        x[:, :4] = 1.5
        x[:, 4:8] *= 1e-8
    value = fid_from_features(a, b)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(_independent_frechet(a, b), rel=1e-5)
    assert value == pytest.approx(_torch_fidelity_frechet(a, b), rel=1e-4)


def test_fid_of_float32_statistics_is_computed_in_float64():
    a, b = _random_features(9, n=200, d=16), _random_features(10, n=200, d=16, shift=0.5)
    low = [
        FeatureStats(s.mu.astype(np.float32), s.sigma.astype(np.float32))
        for s in (FeatureStats.from_features(a), FeatureStats.from_features(b))
    ]
    assert frechet_distance(*low) == pytest.approx(_independent_frechet(a, b), rel=1e-5)


def test_fid_falls_back_to_the_offset_when_sqrtm_fails(monkeypatch):
    # Fault injection: scipy's sqrtm returns NaN for the raw product (as in LightningDiT#97); the
    # eps*I-offset retry must then give the right value, and a second failure is an error.
    import workloads.metrics.frechet as frechet

    real_sqrtm, calls = frechet.linalg.sqrtm, []

    def failing_once(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(frechet.linalg, "sqrtm", failing_once)
    a, b = _random_features(11, n=300, d=16), _random_features(12, n=300, d=16, shift=0.3)
    assert fid_from_features(a, b) == pytest.approx(_independent_frechet(a, b), rel=1e-4)
    assert len(calls) == 2
    monkeypatch.setattr(frechet.linalg, "sqrtm", lambda m: np.full_like(m, np.nan))
    with pytest.raises(ValueError, match="no finite matrix square root"):
        fid_from_features(a, b)


def test_fid_refuses_a_large_imaginary_part(monkeypatch):
    import workloads.metrics.frechet as frechet

    a, b = _random_features(13, n=300, d=8), _random_features(14, n=300, d=8)
    product = np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)
    complex_root = frechet.linalg.sqrtm(product) + 0.5j * np.eye(8)
    # A root that squares back within tolerance is impossible with a 0.5j diagonal, so inject
    # the check itself: the imaginary guard must reject what sqrtm hands back.
    monkeypatch.setattr(frechet, "_sqrtm_or_none", lambda m: complex_root)
    with pytest.raises(ValueError, match="imaginary component 0.5"):
        fid_from_features(a, b)


def test_inception_score_of_uniform_logits_is_one():
    mean, std = inception_score(torch.zeros(100, 1008))
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_distinct_classes_is_the_class_count():
    logits = torch.full((100, 10), -1e4)
    logits[torch.arange(100), torch.arange(100) % 10] = 0.0
    assert inception_score(logits)[0] == pytest.approx(10.0, rel=1e-6)


def _adm_inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """ADM's evaluator: consecutive chunks of `split_size`, mean of exp(mean KL)."""
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start : start + split_size]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores))


def test_inception_score_uses_adm_5000_sample_splits():
    from workloads.metrics.inception_score import inception_score_splits

    logits = np.random.default_rng(20).normal(size=(10_000, 32)) * 3
    # 10K samples: two splits of 5,000, exactly ADM's computation (not 10 splits of 1,000).
    assert inception_score(logits)[0] == pytest.approx(_adm_inception_score(logits), rel=1e-9)
    assert inception_score(logits)[0] != pytest.approx(
        np.mean([_adm_inception_score(part, 1000) for part in np.split(logits, 10)]), rel=1e-6
    )
    # Documented behaviour: floor(N / 5,000) equal splits, at least one.
    assert [inception_score_splits(n) for n in (40, 4_999, 5_000, 12_345, 50_000)] == [
        1,
        1,
        1,
        2,
        10,
    ]
    assert inception_score(logits[:500])[0] == pytest.approx(
        _adm_inception_score(logits[:500]), rel=1e-9
    )


def test_precision_recall_on_toy_sets():
    real = _random_features(5, n=300, d=8)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    far_away = _random_features(6, n=300, d=8, shift=1e3)
    assert precision_recall(real, far_away, chunk_size=64) == (0.0, 0.0)


def test_precision_recall_reference_spans_every_class_of_a_class_ordered_index():
    from workloads.metrics.precision_recall import reference_rows

    # An index in class-folder order, as the ingest writes it: 1,000 classes x 50 images.
    labels = np.repeat(np.arange(1_000), 50)
    rows = reference_rows(len(labels), 10_000, seed=0)
    assert len(set(rows.tolist())) == 10_000  # without replacement
    assert set(labels[rows].tolist()) == set(range(1_000))  # the first 10K rows hold 200 classes
    assert len(set(labels[:10_000].tolist())) == 200
    assert np.array_equal(rows, reference_rows(len(labels), 10_000, seed=0))  # seeded
    with pytest.raises(ValueError, match="holds 40 rows, fewer than the 500"):
        reference_rows(40, 500, seed=0)


def test_precision_recall_chunking_does_not_change_the_result():
    real, generated = _random_features(7, n=257, d=8), _random_features(8, n=190, d=8, shift=0.5)
    assert precision_recall(real, generated, chunk_size=16) == precision_recall(real, generated)


# ------------------------------------------------------------------ tokenizer metrics


def test_psnr_of_a_constant_offset_on_uint8():
    originals = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    shifted = originals + 5  # MSE = 25 exactly
    expected = 20 * math.log10(255 / 5)
    assert torch.allclose(psnr(originals, shifted), torch.full((2,), expected, dtype=torch.float64))


def test_psnr_quantises_float_images_like_the_reference():
    x = torch.zeros(1, 3, 4, 4)  # -> uint8 128
    y = torch.full((1, 3, 4, 4), 10 / 127.5)  # -> uint8 138
    assert psnr(x, y).item() == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ssim_of_constant_images_matches_the_closed_form():
    a, b = 0.2, -0.4
    x, y = torch.full((1, 3, 11, 11), a), torch.full((1, 3, 11, 11), b)
    c1 = (0.01 * 2) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)  # variances vanish, structure term is 1
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_ssim_matches_a_hand_computed_map():
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, size=(12, 12))
    y = np.clip(0.5 * x + rng.normal(0, 0.2, size=(12, 12)), -1, 1)
    offsets = np.arange(11) - 5
    profile = np.exp(-(offsets**2) / (2 * 1.5**2))
    weights = np.outer(profile, profile) / np.outer(profile, profile).sum()
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    px, py = np.pad(x, 5, mode="reflect"), np.pad(y, 5, mode="reflect")
    values = []
    for row in range(12):
        for col in range(12):
            wx, wy = px[row : row + 11, col : col + 11], py[row : row + 11, col : col + 11]
            mx, my = (weights * wx).sum(), (weights * wy).sum()
            vx, vy = (weights * wx * wx).sum() - mx**2, (weights * wy * wy).sum() - my**2
            cov = (weights * wx * wy).sum() - mx * my
            values.append(
                (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    as_image = lambda a: torch.from_numpy(a).float().expand(1, 3, 12, 12)  # noqa: E731
    assert ssim(as_image(x), as_image(y)).item() == pytest.approx(np.mean(values), rel=1e-5)


def test_lpips_and_rfid_plumbing():
    def mean_abs_lpips(x, y):
        return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

    x = torch.zeros(3, 3, 8, 8, dtype=torch.uint8) + 128
    y = torch.full((3, 3, 8, 8), 0.5)
    assert lpips_distance(mean_abs_lpips, x, y).shape == (3,)
    features = _random_features(10)
    assert abs(rfid(features, features)) < 1e-6


# ------------------------------------------------------------------ Inception wrapper


@pytest.fixture(scope="module")
def random_inception():
    return InceptionFeatures(random_init=True, seed=0)


def test_inception_wrapper_shapes_and_identity(random_inception):
    outputs = random_inception(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert outputs.pool.shape == (2, 2048)
    assert outputs.logits.shape == (2, 1008)
    assert outputs.spatial.shape == (2, 7 * 17 * 17)
    assert all(torch.isfinite(t).all() for t in (outputs.pool, outputs.logits, outputs.spatial))
    identity = random_inception.identity
    assert identity.name.endswith("random-init") and len(identity.weights_sha256) == 64
    assert identity.version == __import__("torch_fidelity").__version__


def test_inception_wrapper_loads_a_local_weights_file(random_inception, tmp_path):
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save(random_inception.network.state_dict(), weights)
    from_file = InceptionFeatures(weights)
    assert from_file.identity.weights_sha256 == sha256_file(weights)
    images = torch.rand(2, 3, 40, 40) * 2 - 1  # float [-1, 1] inputs are quantised like samples
    assert torch.allclose(from_file(images).pool, random_inception(images).pool)
    with pytest.raises(ValueError, match="exactly one"):
        InceptionFeatures()


def test_inception_extract_batches_numpy_images(random_inception):
    images = np.random.default_rng(15).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    features = random_inception.extract(images, batch_size=2)
    assert {name: f.shape for name, f in features.items()} == {
        "pool": (3, 2048),
        "logits": (3, 1008),
        "spatial": (3, 2023),
    }
    single = random_inception(torch.from_numpy(images[:1]).permute(0, 3, 1, 2))
    assert np.allclose(features["pool"][:1], single.pool.double().numpy(), atol=1e-5)


def test_inception_suite_names_every_metric_with_its_sample_count():
    generated = {
        "pool": _random_features(16, n=50, d=8),
        "spatial": _random_features(17, n=50, d=6),
        "logits": np.zeros((50, 10)),
    }
    reference = {name: FeatureStats.from_features(generated[name]) for name in ("pool", "spatial")}
    metrics = inception_generation_metrics(generated, reference, generated["pool"])
    assert set(metrics) == {"fid_50", "sfid_50", "is_50", "precision_50", "recall_50"}
    assert abs(metrics["fid_50"]) < 1e-6 and abs(metrics["sfid_50"]) < 1e-6
    assert metrics["precision_50"] == metrics["recall_50"] == 1.0
    assert metrics["is_50"] == pytest.approx(1.0)
    without_spatial = inception_generation_metrics(
        generated, {"pool": reference["pool"]}, generated["pool"]
    )
    assert set(without_spatial) == {"fid_50", "is_50", "precision_50", "recall_50"}
    with pytest.raises(ValueError, match="needs 50 reference images, got 49"):
        inception_generation_metrics(generated, reference, generated["pool"][:49])


def test_metric_names_carry_counts_and_directions_from_one_table():
    from workloads.metrics.names import (
        axis_label,
        is_known,
        lower_is_better,
        metric_name,
        parse_metric,
    )

    assert metric_name("fid", 50_000) == "fid_50k"
    assert metric_name("precision", 10_000) == "precision_10k"
    assert metric_name("fd_proxy", 500) == "fd_proxy_500"
    assert metric_name("rfid", 12_345) == "rfid_12345"
    assert metric_name("psnr", 500) == "psnr"
    assert parse_metric("precision_proxy_500") == ("precision_proxy", 500)
    assert parse_metric("is_10k") == ("is", 10_000)
    assert axis_label("fid_10k") == "FID-10K (lower is better)"
    assert axis_label("is_50k") == "IS-50K (higher is better)"
    assert axis_label("recall_proxy_500") == "Recall-proxy-500 (higher is better)"
    assert axis_label("psnr") == "PSNR (dB) (higher is better)"
    assert axis_label("fid") == "FID (lower is better)"  # an axis no row reported yet
    assert not lower_is_better("precision_proxy_500") and lower_is_better("rfd_dinov2_50k")
    assert is_known("fid") and not is_known("gfid") and not is_known("fid_")
    with pytest.raises(KeyError):
        lower_is_better("gfid")


# ------------------------------------------------------------------ reference statistics


def test_reference_stats_are_computed_once_and_cached(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"pool": _random_features(11), "spatial": _random_features(12, d=6)}

    first = reference_stats(tmp_path, "embedded-abc/train|inception#sha256:00", compute)
    second = reference_stats(tmp_path, "embedded-abc/train|inception#sha256:00", compute)
    assert len(calls) == 1
    assert np.allclose(first["pool"].sigma, second["pool"].sigma)
    assert second["spatial"].mu.shape == (6,)


def _adm_batch(path, images: int = 12, **drop) -> None:
    """A miniature ADM reference batch: arr_0 images plus pool and spatial statistics."""
    rng = np.random.default_rng(14)
    arrays = {
        "arr_0": rng.integers(0, 256, size=(images, 8, 8, 3), dtype=np.uint8),
        "mu": rng.normal(size=4),
        "sigma": np.eye(4),
        "mu_s": rng.normal(size=3),
        "sigma_s": np.eye(3),
    }
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})


def test_adm_reference_batch_is_read_as_is(tmp_path):
    from workloads.metrics.reference import load_reference_batch

    _adm_batch(tmp_path / "VIRTUAL_tiny.npz")
    batch = load_reference_batch(tmp_path / "VIRTUAL_tiny.npz", num_images=10)
    assert batch.images.shape == (12, 8, 8, 3) and batch.images.dtype == np.uint8
    first = load_reference_batch(tmp_path / "VIRTUAL_tiny.npz", num_images=10, max_images=5)
    assert np.array_equal(first.images, batch.images[:5])
    assert set(batch.stats) == {"pool", "spatial"}
    assert batch.stats["spatial"].sigma.shape == (3, 3)


@pytest.mark.parametrize(
    ("drop", "images", "message"),
    [
        ({"arr_0": 1}, 12, r"VIRTUAL_bad.npz: not an ADM reference batch: lacks arr_0 .*; has mu,"),
        ({"mu": 1, "sigma": 1}, 12, r"VIRTUAL_bad.npz: .*lacks mu, sigma"),
        ({"sigma_s": 1}, 12, r"VIRTUAL_bad.npz: .*lacks sigma_s"),
        ({}, 8, r"VIRTUAL_bad.npz: arr_0 holds 8 images, fewer than the 10 reference images"),
    ],
)
def test_a_bad_reference_batch_is_one_line_naming_file_and_what_is_missing(
    tmp_path, drop, images, message
):
    from workloads.metrics.reference import check_reference_batch

    _adm_batch(tmp_path / "VIRTUAL_bad.npz", images=images, **drop)
    with pytest.raises(ValueError, match=message) as error:
        check_reference_batch(tmp_path / "VIRTUAL_bad.npz", num_images=10)
    assert "\n" not in str(error.value)
    (tmp_path / "not_npz.npz").write_text("hello")
    with pytest.raises(ValueError, match="not_npz.npz: not a readable .npz"):
        check_reference_batch(tmp_path / "not_npz.npz", num_images=10)


# ------------------------------------------------------------------ EvalSpec and labels


def _eval_spec(num_samples: int) -> EvalSpec:
    return EvalSpec(
        sampler={
            "method": "euler",
            "num_steps": 250,
            "cfg_scale": 6.7,
            "cfg_interval_start": 0.125,
            "timestep_shift": 0.3,
            "cfg_channels": 3,
        },
        num_samples=num_samples,
        label_policy="uniform",
        reference_stats_id="VIRTUAL_imagenet256_labeled",
        evaluator=EvaluatorIdentity("torch-fidelity-inception-v3-compat", "0.4.0", "ab" * 32),
        seeds={"noise": 0, "labels": 1},
    )


def test_eval_spec_round_trips_through_json():
    spec = _eval_spec(10_000)
    assert EvalSpec.from_json(spec.to_json()) == spec
    assert EvalSpec.from_json(spec.to_json()).identity() == spec.identity()
    assert spec.label("fid") == "FID-10K"


def test_metric_labels_round_down_to_thousands():
    assert metric_label("fid", 50_000) == "FID-50K"
    assert metric_label("fid", 49_999) == "FID-49K"
    assert metric_label("fid", 10_000) == "FID-10K"
    assert metric_label("fid", 2_500) == "FID-2K"
    assert metric_label("fid", 640) == "FID-640"
    assert metric_label("fd_proxy", 2_000) == "FD-proxy-2K"


def test_fid50k_label_is_refused_with_fewer_samples():
    require_label("FID-50K", 50_000)
    require_label("FID-10K", 10_000)
    with pytest.raises(ValueError, match=r"FID-50K requires at least 50,000 samples.*FID-10K"):
        require_label("FID-50K", 10_000)


def test_eval_spec_validates_its_fields():
    with pytest.raises(ValueError, match="label_policy"):
        EvalSpec(**{**_eval_spec(10).__dict__, "label_policy": "random"})
    # The sampler settings are a SamplerSpec: the old `steps` spelling and missing fields fail.
    with pytest.raises(ValueError, match=r"unknown SamplerSpec fields: \['steps'\]"):
        EvalSpec(**{**_eval_spec(10).__dict__, "sampler": {"method": "euler", "steps": 250}})
    with pytest.raises(ValueError, match=r"SamplerSpec lacks \['num_steps'\]"):
        EvalSpec(**{**_eval_spec(10).__dict__, "sampler": {"method": "euler"}})


# ------------------------------------------------------------------ latent uniformity


def test_gini_extremes():
    assert gini_coefficient(np.ones(10)) == pytest.approx(0.0)
    assert gini_coefficient(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)


def test_latent_uniformity_on_a_tiny_sample():
    latents = torch.randn(20, 4, 4, 4)
    metrics = latent_uniformity(latents, num_samples=150, latents_flip=latents.flip(-1))
    assert 0.0 < metrics["density_cv"] < 2.0
    assert 0.0 < metrics["gini"] < 1.0
    assert 0.8 < metrics["normalized_entropy"] <= 1.0
    assert metrics["num_samples"] == 150 and metrics["num_runs"] == 1


def test_latent_pixels_are_drawn_without_replacement():
    from workloads.metrics.uniformity import sample_latent_pixels

    # One pixel per image, as the tokenizer evaluation stores them: drawing all N must use each
    # exactly once (with replacement, ~37 % would be duplicates).
    latents = torch.randn(500, 4, 1, 1)
    pixels = sample_latent_pixels(latents, 500, np.random.default_rng(0))
    assert len(np.unique(pixels.round(12), axis=0)) == 500
    grid = torch.randn(6, 4, 3, 3)
    assert len(np.unique(sample_latent_pixels(grid, 54, np.random.default_rng(1)), axis=0)) == 54
    with pytest.raises(ValueError, match="cannot draw 55 distinct latent pixels from 54"):
        sample_latent_pixels(grid, 55, np.random.default_rng(1))
