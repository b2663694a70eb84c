"""Uniformity of the latent space (paper Tab. 6), following the reference's ``tools/latent_vis.py``.

Per run: sample latent *pixels* (one random position of one random image, flipped or not),
normalise every channel, embed them in 2-D with t-SNE (perplexity 30, seed 42), estimate the
density at every embedded point with a Gaussian KDE, and summarise how even that density is:
density CV (std / mean, lower is more uniform), Gini coefficient (lower is more uniform) and
entropy of the normalised densities divided by log(N) (higher is more uniform). Results are
averaged over runs. The paper uses 10,000 pixels x 10 runs; sweeps default to 2,000 x 1 because
t-SNE dominates the cost. The normalised entropy depends on N through log(N), so compare values
only at equal sample counts.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import gaussian_kde
from sklearn.manifold import TSNE

TSNE_SEED = 42
TSNE_PERPLEXITY = 30.0


def sample_latent_pixels(
    latents: torch.Tensor | np.ndarray,
    num_samples: int,
    rng: np.random.Generator,
    latents_flip: torch.Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """(num_samples, C) channel-normalised latent pixels from (N, C, H, W) latents.

    Pixels are drawn *without replacement* over all N * H * W positions: a pixel drawn twice
    would sit at distance 0 from itself in the embedding and inflate the KDE density there
    (with replacement, only ~63 % of N draws from N pixels are distinct), biasing CV and Gini up.
    `latents_flip` holds the encodings of the horizontally flipped images (the latent cache stores
    both); when given, each sample comes from either with probability 1/2, as the reference does.
    """
    latents = np.asarray(latents, dtype=np.float64)
    count, _, height, width = latents.shape
    if num_samples > count * height * width:
        raise ValueError(
            f"cannot draw {num_samples} distinct latent pixels from {count * height * width}"
        )
    flat = rng.choice(count * height * width, size=num_samples, replace=False)
    images, rows, cols = np.unravel_index(flat, (count, height, width))
    pixels = latents[images, :, rows, cols]
    if latents_flip is not None:
        flipped = np.asarray(latents_flip, dtype=np.float64)[images, :, rows, cols]
        pixels = np.where(rng.random(num_samples)[:, None] < 0.5, flipped, pixels)
    return (pixels - pixels.mean(axis=0)) / (pixels.std(axis=0) + 1e-8)


def gini_coefficient(values: np.ndarray) -> float:
    """0 for perfectly equal values, approaching 1 when one value holds everything."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * ordered) / (n * ordered.sum()))


def density_uniformity(embedding: np.ndarray) -> dict[str, float]:
    """Density CV, Gini and normalised entropy of a Gaussian KDE evaluated at the points themselves."""
    density = gaussian_kde(embedding.T)(embedding.T)
    probabilities = density / density.sum()
    entropy = -np.sum(probabilities * np.log(probabilities + 1e-300))
    return {
        "density_cv": float(density.std() / density.mean()),
        "gini": gini_coefficient(density),
        "normalized_entropy": float(entropy / np.log(len(density))),
    }


def latent_uniformity(
    latents: torch.Tensor | np.ndarray,
    num_samples: int = 2000,
    num_runs: int = 1,
    seed: int = 0,
    latents_flip: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Tab. 6 uniformity metrics averaged over `num_runs` independent pixel samples."""
    if num_samples <= 3 * TSNE_PERPLEXITY:
        raise ValueError(f"num_samples must exceed {3 * TSNE_PERPLEXITY:.0f} for perplexity 30")
    runs = []
    for run in range(num_runs):
        rng = np.random.default_rng([seed, run])
        pixels = sample_latent_pixels(latents, num_samples, rng, latents_flip)
        tsne = TSNE(
            n_components=2, perplexity=TSNE_PERPLEXITY, max_iter=1000, random_state=TSNE_SEED
        )
        runs.append(density_uniformity(tsne.fit_transform(pixels)))
    summary = {name: float(np.mean([run[name] for run in runs])) for name in runs[0]}
    return {**summary, "num_samples": num_samples, "num_runs": num_runs}
