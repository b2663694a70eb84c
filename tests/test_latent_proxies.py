"""The gFID proxies' math on tiny fixed sets (workloads/metrics/latent_proxies.py)."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.metrics.latent_proxies import (
    choose_neighbours,
    cosine_neighbours,
    interpolation_partners,
    neighbour_label_agreement,
    slerp,
    spatial_self_similarity,
)


def test_neighbours_are_ranked_by_cosine_not_by_distance():
    bank = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    query = np.array([[2.0, 0.02]])
    # Row 1 is far away in L2 but nearly parallel; row 3 points the other way.
    assert cosine_neighbours(query, bank, 3).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="5 neighbours"):
        cosine_neighbours(query, bank, 5)


def test_the_draw_follows_softmax_of_minus_mse():
    query = np.zeros((1, 2))
    bank = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # MSE 0, 1, 4
    neighbours = np.array([[0, 1, 2]])
    p = np.exp([0.0, -1.0, -4.0])
    p /= p.sum()  # 0.7214, 0.2654, 0.0132
    edges = np.cumsum(p)
    for u, expected in [(0.0, 0), (edges[0] - 1e-9, 0), (edges[0] + 1e-9, 1), (0.999, 2)]:
        assert choose_neighbours(query, bank, neighbours, np.array([u]))[0] == expected
    # Over many draws the frequencies are the softmax's.
    uniforms = np.random.default_rng(0).random(20_000)
    picks = choose_neighbours(
        np.zeros((20_000, 2)), bank, np.tile(neighbours, (20_000, 1)), uniforms
    )
    assert np.bincount(picks, minlength=3) / 20_000 == pytest.approx(p, abs=0.01)


def test_slerp_halfway_keeps_the_arc_and_the_shape():
    a = np.array([[[1.0, 0.0]], [[2.0, 0.0]]])  # (2, 1, 2): shape is kept
    b = np.array([[[0.0, 1.0]], [[4.0, 0.0]]])
    mid = slerp(a, b, 0.5)
    assert mid.shape == a.shape
    # Orthogonal unit vectors: the midpoint on the circle, norm 1 (linear would give 0.707).
    assert mid[0, 0] == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    # Parallel vectors: no angle, the linear midpoint.
    assert mid[1, 0] == pytest.approx([3.0, 0.0])
    assert slerp(a, b, 0.0) == pytest.approx(a)
    assert slerp(a, b, 1.0) == pytest.approx(b)


def test_ifid_partners_on_a_fixed_set():
    rng = np.random.default_rng(0)
    bank = 3 * rng.standard_normal((30, 2, 3, 3))
    # Each query is a bank latent slightly perturbed: its own original is its closest neighbour
    # and, at MSE ~0 against ~18 for the others, all but certainly the draw.
    queries = bank[[4, 17]] + 0.01 * rng.standard_normal((2, 2, 3, 3))
    assert interpolation_partners(queries, bank, np.array([0.5, 0.5])).tolist() == [4, 17]


def test_label_agreement_and_spatial_self_similarity():
    # Two tight clusters with their own labels: full agreement; shuffled labels: about chance.
    rng = np.random.default_rng(1)
    centres = np.repeat(np.eye(2) * 10, 12, axis=0)
    latents = centres + rng.standard_normal((24, 2))
    labels = np.repeat([0, 1], 12)
    assert neighbour_label_agreement(latents, labels, k=5) == 1.0
    assert neighbour_label_agreement(latents, rng.permutation(labels), k=5) < 0.8

    # A smooth latent (each position's vector turns slowly across the grid) has structure; a
    # constant one has none (near and far pairs are equally similar); noise has about none.
    angle = np.add.outer(np.arange(8), np.arange(8)) * (np.pi / 14)
    smooth = np.stack([np.cos(angle), np.sin(angle)])[None]
    assert spatial_self_similarity(smooth) > 0.5
    assert spatial_self_similarity(np.ones((1, 2, 8, 8))) == pytest.approx(0.0)
    assert abs(spatial_self_similarity(rng.standard_normal((4, 8, 8, 8)))) < 0.1
