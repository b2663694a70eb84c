"""The LightningDiT workload: rectified flow on cached latent moments (or on images encoded in
the step by a frozen tokenizer encoder, `cache.mode: on_the_fly`), AdamW, EMA.

EMA placement: rank 0 only. Under ZeRO 0-2 every rank holds the full weights, so rank 0
updates from its own parameters with no communication; under ZeRO-3 every rank takes part in
gathering the partitioned parameters chunk by chunk (`gathered_named_parameters`) and rank 0
folds each chunk into the fp32 shadow before it is re-partitioned. One fp32 copy of the model
in the whole job instead of one per rank, which is the memory ZeRO was asked to save.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data.sampler import LatentBatchSampler
from orchestrator.storage.models import build_generator, read_weights
from orchestrator.train.engine import gathered_named_parameters
from orchestrator.train.guard import SkippableAdamW
from orchestrator.train.plan import StagePlan
from orchestrator.train.state import Extra, load_extra
from orchestrator.train.workload import ModelBundle, load_full_weights
from workloads.dit import (
    EMA,
    DDPMObjective,
    LatentStats,
    LightningDiT,
    RectifiedFlowObjective,
)
from workloads.families import TokenizerSpec

EMA_EXTRA = "ema"


class GeneratorWorkload:
    name = "generator"

    def __init__(
        self,
        cfg: ExperimentConfig,
        stages: tuple[StagePlan, ...],
        inputs: dict,
        device: torch.device,
        rank: int,
    ):
        self.cfg = cfg
        self.stages = stages
        self.device = device
        self.rank = rank
        gen = cfg.generator
        stats = LatentStats.from_dict(inputs["latent_stats"])
        # On the fly: the frozen encoder (RAE's) turns each image batch into latents here, the
        # flip coin drawn before encoding (one encode per image, not two).
        on_the_fly = "tokenizer" in inputs
        self.sampler = LatentBatchSampler(stats, flip=cfg.cache.flip and not on_the_fly)
        self.encoder = None
        if on_the_fly:
            tokenizer = inputs["tokenizer"]
            weights, _ = read_weights(tokenizer["weights"])
            self.encoder = TokenizerSpec(**tokenizer["spec"]).build(weights).to(device)
        # Flip coins, posterior noise, flow noise and t all draw from this stream; label
        # dropout inside the model draws from the global torch stream (also checkpointed).
        self.noise_rng = torch.Generator(device=device)
        self.generators = {"noise": self.noise_rng}
        transport = gen.transport
        weights = {
            "mse_weight": transport.mse_weight,
            "cos_weight": transport.cos_weight if transport.use_cosine_loss else 0.0,
            # A number by now: `auto` is resolved from the latent shape (validation.resolve).
            "time_shift": gen.training.time_shift,
        }
        self.objectives = {
            name: RectifiedFlowObjective(time_sampling=name, **weights)
            for name in ("logit_normal", "uniform")
        }
        self.objectives["ddpm"] = DDPMObjective(learn_sigma=gen.model.learn_sigma)
        self.ema: EMA | None = None
        # Whether the EMA exists (rank 0) or was restored: known on EVERY rank, because under
        # ZeRO-3 `start` is collective and all ranks must take the same branch. Rank 0 alone
        # holds the shadow, so `self.ema is not None` cannot be the test (a resumed rank 0
        # would skip the gathers that ranks >= 1 enter, and the job would deadlock).
        self._ema_ready = False
        self._zero_stage = cfg.generator.training.zero_stage

    def new_model(self) -> LightningDiT:
        model = build_generator(self.cfg)
        model.use_checkpoint = self.cfg.generator.training.activation_checkpointing
        return model

    def build(self, stage_index: int, weights: dict[str, torch.Tensor] | None) -> ModelBundle:
        model = self.new_model()
        if weights is not None:
            load_full_weights(model, weights)
        model.to(self.device)
        opt = self.cfg.generator.optimizer
        optimizer = SkippableAdamW(
            model.parameters(),
            lr=opt.lr,
            betas=opt.betas,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
        return ModelBundle(model, optimizer)

    def objective(self, global_step: int) -> RectifiedFlowObjective | DDPMObjective:
        """DiT's DDPM, or rectified flow with t drawn as `time_sampling` says at this step."""
        if self.cfg.generator.objective == "ddpm":
            return self.objectives["ddpm"]
        return self.objectives[self.time_sampling(global_step)]

    def time_sampling(self, global_step: int) -> str:
        """Logit-normal t, switched to uniform once `uniform_t_after_step` steps are done."""
        transport = self.cfg.generator.transport
        switch = transport.uniform_t_after_step
        if not transport.use_lognorm or (switch is not None and global_step >= switch):
            return "uniform"
        return "logit_normal"

    def loss(
        self,
        engine,
        batch: dict[str, np.ndarray],
        stage_index: int,
        stage_step: int,
        global_step: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tensors = {key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
        if self.encoder is not None:
            tensors = self.encode(tensors)
        z, labels = self.sampler(tensors, self.noise_rng)
        terms = self.objective(global_step)(engine, z, labels, generator=self.noise_rng)
        loss = terms.pop("loss")
        return loss, terms

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images -> the latents a cache row would give the sampler: with `cache.flip`, each
        image mirrored with p = 0.5 (the coin the sampler draws from a cache's two views)."""
        images = batch.pop("image")
        if self.cfg.cache.flip:
            coin = torch.rand(images.shape[0], generator=self.noise_rng, device=images.device)
            images = torch.where((coin < 0.5).view(-1, 1, 1, 1), images.flip(-1), images)
        batch["mean"] = self.encoder.encode(images).mean
        return batch

    # ------------------------------------------------------------------ EMA
    def start(self, engine) -> None:
        if self._ema_ready:
            return
        self._ema_ready = True
        if self._zero_stage != 3 and self.rank != 0:
            return
        # Copy-initialised from the weights the engine starts from (DiT's update_ema(decay=0)).
        pairs = gathered_named_parameters(engine.module, self._zero_stage)
        decay = self.cfg.generator.ema.decay
        if self.rank == 0:
            self.ema = EMA(pairs, decay=decay)
        else:
            for _ in pairs:  # take part in the ZeRO-3 gathers
                pass

    def after_update(self, engine) -> None:
        if self._zero_stage != 3 and self.rank != 0:
            return
        pairs = gathered_named_parameters(engine.module, self._zero_stage)
        if self.rank == 0:
            self.ema.update(pairs)
        else:
            for _ in pairs:
                pass

    def extras(self) -> dict[str, Extra]:
        if self.ema is None:
            return {}
        metadata = {"decay": str(self.ema.decay), "num_updates": str(self.ema.num_updates)}
        return {EMA_EXTRA: Extra(dict(self.ema.shadow), metadata)}

    def load_extras(self, directory: Path) -> None:
        self._ema_ready = True
        if self.rank != 0:
            return
        extra = load_extra(directory, EMA_EXTRA)
        shadow = {name: tensor.to(self.device) for name, tensor in extra.tensors.items()}
        self.ema = EMA(shadow.items(), decay=float(extra.metadata["decay"]))
        self.ema.num_updates = int(extra.metadata["num_updates"])

    # ------------------------------------------------------------------ export
    def export(
        self, weights: dict[str, torch.Tensor]
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        model = self.new_model()
        load_full_weights(model, weights)
        files = {"model": model.state_dict(), "ema": self.ema.model_state_dict(model)}
        summary = {
            "model": self.cfg.generator.model.name,
            "ema_decay": self.ema.decay,
            "ema_updates": self.ema.num_updates,
        }
        return files, summary
