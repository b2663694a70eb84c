"""The VA-VAE workload: the trainable wrapper (autoencoder + projection + discriminator) in one
DeepSpeed engine with two Adam param groups; LPIPS and the foundation model outside it.

One engine, one backward: `VAVAEObjective` makes the generator's and the discriminator's
gradients disjoint (the generator's adversarial term sees D's parameters frozen, the
discriminator loss sees detached reconstructions), so back-propagating their sum fills each
param group with exactly the gradient its own backward would have, and one Adam step with two
groups (per-parameter state, same hyperparameters) equals the reference's autoencoder step
followed by its discriminator step: neither update reads anything the other one wrote.

The adaptive weights (GAN and VF) differentiate with `torch.autograd.grad` on
`decoder.conv_out.weight` / `encoder.conv_out.weight`: four extra backward passes per step.
DeepSpeed tolerates neither kind of extra pass: it hooks the engine's outputs so that every
backward through them runs its gradient-reduction epilogue, and ZeRO-3 re-gathers a
submodule's parameters for exactly one backward per forward. So the whole objective runs inside
the engine's forward (`VAVAETrainingStep`): the extra passes happen before DeepSpeed hooks
the outputs, and under ZeRO-3 the step module is a "leaf" whose parameters DeepSpeed gathers
whole, once for the forward and once for the backward, instead of submodule by submodule.
Between steps the parameters stay partitioned.

Why one leaf is the right granularity: ZeRO-3 still partitions the parameters, gradients and
Adam state (1/N per rank at rest, checked by test_train_driver.py); only the step's compute
window holds the whole wrapper, 72.6 M parameters for the paper's f16d32 VA-VAE with its
PatchGAN and projection, 0.29 GB in fp32, small beside the activations of a 256 px batch.
Gathering submodule by submodule would need the adaptive weights' `autograd.grad` passes to
re-gather `conv_out` outside DeepSpeed's one-backward-per-forward bookkeeping, which it does
not support; the saving would be those 0.29 GB per GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from orchestrator.config import ExperimentConfig
from orchestrator.config.schema import VFLossConfig
from orchestrator.storage.artifacts import LATENT_STATS_FILE
from orchestrator.storage.models import build_generator, foundation_architecture, tokenizer_spec
from orchestrator.storage.store import local_copy
from orchestrator.train.guard import SkippableAdam
from orchestrator.train.plan import StagePlan
from orchestrator.train.state import Extra
from orchestrator.train.workload import ModelBundle, load_full_weights
from workloads.families import get_family
from workloads.foundation import FoundationModel
from workloads.standin import load_standin_spec
from workloads.vavae import LPIPS, VAVAE, VAVAEObjective

RANDOM_INIT = "random_init"
# Key prefix of the VAVAE inside the step module (checkpoints and consolidated weights).
VAVAE_PREFIX = "vavae."
EXTRA_PREFIX = "extra."


def build_lpips(files: list[str | None] | None) -> LPIPS | None:
    """The frozen LPIPS network from resolved [weights, backbone] (`inputs.perceptual_loss_weights`);
    None = the perceptual term is off."""
    if files is None:
        return None
    weights, backbone = files
    return LPIPS(weights=weights, backbone_weights=backbone)


def build_foundation_model(
    vf: VFLossConfig, resolution: int, grid: int, weights: str, options: dict | None = None
) -> FoundationModel | None:
    """The frozen foundation model `tokenizer.vf` names (the VF target, REPA-E's REPA target or
    RAE's encoder, built with the family's `options`); `weights` is already resolved."""
    if not vf.enabled:
        return None
    timm_name, timm_kwargs = foundation_architecture(vf.foundation, resolution, grid)
    if vf.foundation == "standin" and weights != RANDOM_INIT:
        if "://" in weights:  # on object storage: copy its directory (weights + sidecar) once
            folder, name = weights.rsplit("/", 1)
            weights = str(local_copy(folder) / name)
        # A trained stand-in: the architecture its sidecar records.
        timm_name, timm_kwargs = load_standin_spec(Path(weights))
    return FoundationModel(
        timm_name,
        weights=weights,
        timm_kwargs=timm_kwargs,
        input_norm=vf.input_norm,
        **(options or {}),
    )


class VAVAETrainingStep(nn.Module):
    """The trainable VAVAE (+ the family's training-only networks, `extra`, e.g. REPA-E's DiT)
    and the stage's objective: `(images, step, rng, labels) -> (loss, terms)`.

    The objective (holding the frozen LPIPS and foundation model) is a plain attribute, not a
    submodule, so DeepSpeed never partitions or trains the frozen networks.
    """

    def __init__(self, vavae: VAVAE, extra: nn.Module | None = None):
        super().__init__()
        self.vavae = vavae
        self.extra = extra
        self.objective: VAVAEObjective | None = None

    def forward(
        self,
        images: torch.Tensor,
        step: int,
        generator: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # The single-backward form: generator total + discriminator loss, disjoint gradients.
        return self.objective(self.vavae, images, step, generator, self.extra, labels)


class TokenizerWorkload:
    name = "tokenizer"

    def __init__(
        self,
        cfg: ExperimentConfig,
        stages: tuple[StagePlan, ...],
        inputs: dict,
        device: torch.device,
    ):
        self.cfg = cfg
        self.stages = stages
        self.device = device
        tok = cfg.tokenizer
        grid = cfg.dataset.resolution // tok.downsample_factor
        self.lpips = build_lpips(inputs.get("lpips_weights"))
        self.family = get_family(tok.family)
        self.foundation = build_foundation_model(
            tok.vf,
            cfg.dataset.resolution,
            grid,
            inputs.get("foundation_weights", RANDOM_INIT),
            self.family.foundation_options,
        )
        # The posterior sample z = mean + std * eps draws from this stream.
        self.posterior_rng = torch.Generator(device=device)
        self.generators = {"posterior": self.posterior_rng}
        self._objectives = [self._objective(stage) for stage in stages]

    # ------------------------------------------------------------------ model and objective
    def new_vavae(self) -> nn.Module:
        """The family's trainable tokenizer (a `VAVAE`, or RAE's decoder on its frozen encoder,
        which is then the foundation model `tokenizer.vf` names)."""
        loss = self.cfg.tokenizer.loss
        frozen = self.family.frozen_encoder
        vavae = self.family.training_model(
            tokenizer_spec(self.cfg).kwargs,
            vf_feature_dim=None if self.foundation is None or frozen else self.foundation.embed_dim,
            disc_ndf=loss.disc_ndf,
            disc_layers=loss.disc_num_layers,
            encoder=self.foundation if frozen else None,
        )
        if self.cfg.tokenizer.vf.proj_fix:
            vavae.fix_projection()
        return vavae

    def new_extra(self) -> nn.Module | None:
        """The family's training-only networks; REPA-E's DiT is the point's generator model."""
        if self.foundation is None:
            return None
        return self.family.build_extra(build_generator(self.cfg), self.foundation.embed_dim)

    def build(self, stage_index: int, weights: dict[str, torch.Tensor] | None) -> ModelBundle:
        step_module = VAVAETrainingStep(self.new_vavae(), self.new_extra())
        if weights is not None:
            # Each stage starts from the previous stage's weights (the reference's init_weight).
            load_full_weights(step_module, weights)
        elif self.cfg.tokenizer.init_from is not None:
            # A fresh run from a tokenizer of ours or a released one (checked before the sweep
            # started); every worker reads the file itself, from shared storage or a URI.
            from orchestrator.storage.pretrained import initial_tokenizer_weights

            step_module.vavae.load_initial_weights(
                initial_tokenizer_weights(self.cfg), self.cfg.tokenizer.init_from
            )
        step_module.objective = self._objectives[stage_index]
        step_module.to(self.device)
        vavae = step_module.vavae
        if self.stages[stage_index].overrides.get("train") == "decoder":
            vavae.freeze_encoder()
        opt = self.cfg.tokenizer.optimizer
        groups = [
            {
                "params": [p for p in vavae.generator_parameters() if p.requires_grad],
                "name": "generator",
            },
            {"params": list(vavae.discriminator_parameters()), "name": "discriminator"},
        ]
        if step_module.extra is not None:
            # Its own betas (REPA-E: AdamW (0.9, 0.999), wd 0 for the SiT); same lr.
            groups.append(
                {
                    "params": list(step_module.extra.parameters()),
                    "name": "extra",
                    "betas": self.family.extra_betas,
                }
            )
        optimizer = SkippableAdam(
            groups,
            lr=opt.lr,
            betas=opt.betas,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
        return ModelBundle(step_module, optimizer, zero3_leaf=True)

    def _objective(self, stage: StagePlan) -> VAVAEObjective:
        tok = self.cfg.tokenizer
        vf = dataclasses.replace(
            tok.vf, **{k: v for k, v in stage.overrides.items() if hasattr(tok.vf, k)}
        )
        decoder_only = stage.overrides.get("train") == "decoder"
        return VAVAEObjective(
            self.lpips,
            self.foundation,
            # The VF loss trains only the encoder and its projection: inert (and its adaptive
            # weight, a gradient w.r.t. the frozen encoder.conv_out, undefined) when they are frozen.
            use_vf=vf.enabled and not decoder_only and self.family.uses_vf_loss,
            vf_weight=vf.vf_weight,
            cos_margin=vf.cos_margin,
            distmat_margin=vf.distmat_margin,
            cos_weight=vf.cos_weight,
            distmat_weight=vf.distmat_weight,
            kl_weight=tok.loss.kl_weight,
            perceptual_weight=tok.loss.perceptual_weight,
            disc_weight=tok.loss.disc_weight,
            # Counted from the start of each stage: every reference stage is a fresh run.
            disc_start=stage.overrides.get("disc_start", tok.loss.disc_start),
            family=self.family,
            decoder_only=decoder_only,
        ).to(self.device)

    def start(self, engine) -> None:
        """Nothing to set up: the objective is attached at build."""

    def loss(
        self,
        engine,
        batch: dict[str, np.ndarray],
        stage_index: int,
        stage_step: int,
        global_step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = torch.from_numpy(batch["image"]).to(self.device)
        if self.cfg.tokenizer.training.zero_stage == 3:
            # ZeRO-3 reduces a leaf module's gradients in its full backward hook, which PyTorch
            # fires once the gradient w.r.t. the module's inputs exists, or, when no input
            # needs one, before the backward even starts. An input that needs a gradient makes
            # the hook wait until every parameter gradient of the step has been accumulated.
            images.requires_grad_(True)
        labels = batch.get("label")
        if labels is not None:
            labels = torch.from_numpy(labels).to(self.device)
        return engine(images, stage_step, self.posterior_rng, labels)

    def after_update(self, engine) -> None:
        """No EMA for the tokenizer (the reference has none)."""

    # ------------------------------------------------------------------ checkpoint and export
    def extras(self) -> dict[str, Extra]:
        return {}

    def load_extras(self, directory: Path) -> None:
        """Nothing outside the engine to restore."""

    def export(
        self, weights: dict[str, torch.Tensor]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        vavae = self.new_vavae()
        load_full_weights(
            vavae,
            {
                k.removeprefix(VAVAE_PREFIX): v
                for k, v in weights.items()
                if k.startswith(VAVAE_PREFIX)
            },
        )
        files = {
            # Exactly the AutoencoderKL inference keys: what the latent cache and evaluation load.
            "model": vavae.export_inference_state_dict(),
            # The whole trainable wrapper (projection, discriminator, logvar) for fine-tuning.
            "training_model": vavae.state_dict(),
        }
        extra = self.new_extra()
        if extra is not None:
            load_full_weights(
                extra,
                {
                    k.removeprefix(EXTRA_PREFIX): v
                    for k, v in weights.items()
                    if k.startswith(EXTRA_PREFIX)
                },
            )
            # REPA-E: the latent BatchNorm's running statistics become the cache's (the latent
            # cache reads this file next to `model.safetensors`).
            files[LATENT_STATS_FILE] = {k: torch.tensor(v) for k, v in extra.latent_stats().items()}
        summary = {
            "autoencoder_config": dict(vavae.config),
            "vf_feature_dim": None if self.foundation is None else self.foundation.embed_dim,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
        }
        return files, summary
