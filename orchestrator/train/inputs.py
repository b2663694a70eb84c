"""Driver-side resolution of what a workload needs besides its config (before workers start)."""

from __future__ import annotations

from orchestrator.config import ExperimentConfig, latent_grid, stage_keys
from orchestrator.storage.artifacts import Artifacts
from orchestrator.storage.store import Storage


def foundation_weights(cfg: ExperimentConfig, storage: Storage, ingested) -> str:
    """The VF target's weights as `hub`, `random_init` or a file path (never `auto`).

    `auto` means the hub for timm models and, for the embedded dataset's stand-in, the ViT
    trained once on the ingested train split and cached under `models/standin-...` (a cache hit
    when the sweep prepared it already).
    """
    vf = cfg.tokenizer.vf
    if not vf.enabled or vf.weights != "auto":
        return vf.weights
    if vf.foundation != "standin":
        return "hub"
    grid = latent_grid(cfg)
    patch = cfg.dataset.resolution // grid
    _, location = storage.built_file(
        Artifacts.standin(stage_keys(cfg).dataset, patch),
        lambda cache_dir: _train_standin(cache_dir, ingested, patch, cfg.dataset.resolution),
    )
    # A path, or a URI the Train workers copy down (`local_copy`): no node needs a shared disk.
    return location


def _train_standin(cache_dir, ingested, patch: int, resolution: int):
    from orchestrator.sweep.budget import computing_here
    from workloads.standin import train_standin_vit

    with computing_here():
        return train_standin_vit(
            dataset_root=ingested.root,
            cache_dir=cache_dir,
            dataset_identity=ingested.dataset_identity,
            patch_size=patch,
            image_size=resolution,
        )


def perceptual_loss_weights(cfg: ExperimentConfig) -> list[str | None] | None:
    """[LPIPS weights, VGG16 backbone or None] for the perceptual term (None: the term is off).

    Resolved here, before any worker starts (`hub` downloads once): a missing file inside the
    workers would be retried `resources.max_failures` times.
    """
    from orchestrator.storage.weights import lpips_files

    loss = cfg.tokenizer.loss
    if loss.perceptual_weight == 0 or loss.lpips_weights == "none":
        return None
    return list(lpips_files(loss.lpips_weights, loss.lpips_backbone_weights))


def check_tokenizer_training(cfg: ExperimentConfig) -> None:
    """Refuse tokenizer settings the VA-VAE model cannot honour (rather than ignore them)."""
    if cfg.tokenizer.training.activation_checkpointing:
        raise ValueError(
            "tokenizer.training.activation_checkpointing: the VA-VAE model has no checkpointed "
            "blocks; set it to false"
        )
