"""Cheap gFID proxies of a tokenizer's latent space, computed without any generator (issue 20).

The math only (NumPy; no model, no I/O): the tokenizer evaluation supplies the latents and does
the decoding and the feature extraction.

- **iFID** ("Making Reconstruction FID Predictive of Diffusion Generation FID", arXiv
  2603.05630; code tongdaxu/Making-rFID-Predictive-of-Diffusion-gFID `evalvae.py`): for each
  validation latent take its `IFID_NEIGHBOURS` nearest *training* latents by cosine similarity
  of the flattened latents, pick one with probability softmax(-MSE), SLERP the two at
  alpha = 0.5, decode, and compute the FID of the decoded interpolations against the validation
  images. Reported Pearson and Spearman ~0.85 with gFID across VAE families, where rFID is
  uncorrelated. Lower is better. Here the training latents are a seeded sample of
  `evaluation.proxy_train_images` images (the paper encodes the whole training set).
- **LNC**, latent nearest-neighbour label agreement ("Diffusing in the Right Space", arXiv
  2606.03578): the fraction of each validation latent's `LNC_NEIGHBOURS` nearest other
  validation latents (cosine) that share its class label, averaged over the first
  `LNC_MAX_LATENTS`. Tracks linear-probe
  accuracy; with spatial structure it fits gFID with R^2 ~0.91 over 86 tokenizers. Higher is
  better.
- **LDS**, spatial self-similarity (iREPA, arXiv 2512.10794, `metrics/spatial_metrics.py`; the
  "spatial structure" of 2606.03578): per latent, the mean cosine similarity between the
  channel vectors of 4-neighbouring positions minus that of positions at Manhattan distance
  >= `LDS_FAR`, averaged over images: how much nearby latent pixels agree beyond chance.
  Higher is better.
"""

from __future__ import annotations

import numpy as np

IFID_NEIGHBOURS = 10
IFID_ALPHA = 0.5
LNC_NEIGHBOURS = 10
# LNC compares every validation latent with every other: at most this many (memory N^2).
LNC_MAX_LATENTS = 10_000
LDS_FAR = 6


def _unit_rows(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def cosine_neighbours(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices into `bank` of each query's k most cosine-similar rows, most similar first
    (ties broken by the lower index, so the choice is deterministic)."""
    if k > len(bank):
        raise ValueError(f"{k} neighbours asked of a bank of {len(bank)} latents")
    similarity = _unit_rows(queries) @ _unit_rows(bank).T
    # A stable sort of -similarity keeps equal similarities in index order.
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def choose_neighbours(
    queries: np.ndarray, bank: np.ndarray, neighbours: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
    """One bank index per query, drawn among its `neighbours` with probability softmax(-MSE)
    (MSE = mean squared difference of the flattened latents). `uniforms` (N,) in [0, 1) are
    the per-query random draws (seeded per image by the caller: batching cannot change them)."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), 1, -1)
    candidates = np.asarray(bank, dtype=np.float64).reshape(len(bank), -1)[neighbours]
    mse = np.mean((candidates - q) ** 2, axis=2)
    logits = -mse - np.max(-mse, axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cumulative = np.cumsum(probabilities, axis=1)
    picks = (cumulative < np.asarray(uniforms)[:, None]).sum(axis=1)
    picks = np.minimum(picks, neighbours.shape[1] - 1)
    return neighbours[np.arange(len(neighbours)), picks]


def slerp(a: np.ndarray, b: np.ndarray, alpha: float = IFID_ALPHA) -> np.ndarray:
    """Spherical interpolation of each row pair of the flattened latents (shape kept):
    sin((1-alpha) theta)/sin(theta) a + sin(alpha theta)/sin(theta) b, theta the angle between
    them; linear where the two are (anti)parallel and the formula is 0/0."""
    shape = np.shape(a)
    fa = np.asarray(a, dtype=np.float64).reshape(shape[0], -1)
    fb = np.asarray(b, dtype=np.float64).reshape(shape[0], -1)
    cos = np.clip(np.sum(_unit_rows(fa) * _unit_rows(fb), axis=1), -1.0, 1.0)
    theta = np.arccos(cos)[:, None]
    sin = np.sin(theta)
    safe = sin[:, 0] > 1e-6
    out = (1 - alpha) * fa + alpha * fb
    wa = np.sin((1 - alpha) * theta[safe]) / sin[safe]
    wb = np.sin(alpha * theta[safe]) / sin[safe]
    out[safe] = wa * fa[safe] + wb * fb[safe]
    return out.reshape(shape)


def interpolation_partners(
    queries: np.ndarray, bank: np.ndarray, uniforms: np.ndarray, k: int = IFID_NEIGHBOURS
) -> np.ndarray:
    """iFID's partner of each validation latent: a bank index (neighbour choice above)."""
    return choose_neighbours(queries, bank, cosine_neighbours(queries, bank, k), uniforms)


def neighbour_label_agreement(
    latents: np.ndarray, labels: np.ndarray, k: int = LNC_NEIGHBOURS
) -> float:
    """LNC: mean fraction of each latent's k nearest *other* latents (cosine) with its label."""
    if k >= len(latents):
        raise ValueError(f"{k} neighbours need more than {len(latents)} latents")
    unit = _unit_rows(latents)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # leave each latent out of its own neighbours
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    labels = np.asarray(labels)
    return float(np.mean(labels[nearest] == labels[:, None]))


def spatial_self_similarity(latents: np.ndarray, far: int = LDS_FAR) -> float:
    """LDS of (N, C, H, W) latents: mean cosine of 4-neighbour position pairs minus mean cosine
    of pairs at Manhattan distance >= `far` (capped at the grid's largest distance)."""
    latents = np.asarray(latents, dtype=np.float64)
    count, channels, height, width = latents.shape
    if height * width < 2:
        raise ValueError("a 1x1 latent grid has no spatial structure to measure")
    rows, cols = np.divmod(np.arange(height * width), width)
    distance = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    far = min(far, height + width - 2)
    near_mask, far_mask = distance == 1, distance >= far
    vectors = latents.reshape(count, channels, -1).transpose(0, 2, 1)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=2, keepdims=True), 1e-12)
    similarity = unit @ unit.transpose(0, 2, 1)
    return float(
        np.mean(similarity[:, near_mask].mean(axis=1) - similarity[:, far_mask].mean(axis=1))
    )
