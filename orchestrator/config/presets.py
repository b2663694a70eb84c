"""Named presets (torchtitan style): Python functions returning a whole typed config.

- `paper`: the published recipe (ImageNet 256, f16d32 VA-VAE with DINOv2, LightningDiT-XL/1).
- `debug_cpu`: the embedded dataset and tiny models, sized so a 6-point sweep fits in minutes on
  a 2-core laptop. Same code path as `paper`; only sizes and lengths change.
- `micro`: smaller still, for the test suite.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.config.schema import (
    AdamConfig,
    AdamWConfig,
    DatasetConfig,
    EMAConfig,
    EmbeddedDatasetConfig,
    EvaluationConfig,
    ExperimentConfig,
    GeneratorConfig,
    GeneratorModelConfig,
    GeneratorTrainingConfig,
    LatentCacheConfig,
    ResourcesConfig,
    SamplerConfig,
    TokenizerArchConfig,
    TokenizerConfig,
    TokenizerLossConfig,
    TrainingConfig,
    VFLossConfig,
)


def paper() -> ExperimentConfig:
    """The paper recipe; every default of the schema is already the paper's value."""
    return ExperimentConfig()


def debug_cpu() -> ExperimentConfig:
    """Embedded dataset (10 classes of 32 px images, trained at 16 px), an f4 tokenizer (4x4
    latents), a 2-block DiT: core-seconds per model, so six points fit in five minutes."""
    return ExperimentConfig(
        dataset=DatasetConfig(
            source="embedded",
            # The ADM crop box-downsamples the 32 px images: 4x less tokenizer compute than 32 px
            # for the same latent grid.
            resolution=16,
            num_classes=None,
            embedded=EmbeddedDatasetConfig(num_classes=10, image_size=32),
        ),
        tokenizer=TokenizerConfig(
            # f4: 4x4 latents. The DiT's step costs ~15 ms at batch 32 on one core against ~55 ms
            # on f2's 8x8, and channels, not positions, carry the image (d in {4, 8, 16}). No
            # attention block: the 3x3 convolutions see a 4x4 grid whole, and it cost ~20 % of a
            # step (measured).
            arch=TokenizerArchConfig(
                embed_dim=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=()
            ),
            # The stand-in ViT is trained once on the embedded set: it carries the dataset's
            # semantics, as DINOv2 does for ImageNet (a random network would align to noise).
            vf=VFLossConfig(foundation="standin"),
            # No pretrained VGG offline, and a random VGG is no perceptual metric: LPIPS is off.
            # A 16 px image leaves a 3-layer PatchGAN no output pixels: 2 layers.
            loss=TokenizerLossConfig(
                perceptual_weight=0.0,
                lpips_weights="none",
                disc_start=135,
                disc_ndf=32,
                disc_num_layers=2,
            ),
            # Hundreds of steps instead of ~100k: small batches and a higher learning rate learn
            # most per CPU-second (1e-4 barely moves in 1k steps).
            optimizer=AdamConfig(lr=2e-3),
            training=_cpu_training(batch=8, steps=180),
        ),
        # No pools: the trial's own process encodes and scores (`num_actors` / `num_workers`
        # 0). On two cores a pool per stage was an actor importing torch for seconds of work.
        cache=LatentCacheConfig(rows_per_shard=1000, batch_size=128, num_actors=0),
        generator=GeneratorConfig(
            model=GeneratorModelConfig(name="LightningDiT-Debug/1"),
            optimizer=AdamWConfig(lr=3e-3),
            # 0.9999 averages over ~10k steps; a run this short needs a shorter horizon.
            ema=EMAConfig(decay=0.995),
            # 900 steps (14 epochs of the 2,000 images): the time one Train run per point
            # (`train/point.py`) freed, spent where a step is cheapest (~19 ms on one core).
            training=_cpu_training(batch=32, steps=900, cls=GeneratorTrainingConfig),
        ),
        sampler=SamplerConfig(
            method="euler", num_steps=20, timestep_shift=0.3, cfg_scale=1.0, cfg_interval_start=0.0
        ),
        evaluation=EvaluationConfig(
            num_samples=500,
            label_policy="balanced",
            batch_size=100,
            # No pretrained Inception offline: FD-proxy in a CNN trained on the embedded set.
            inception_weights=None,
            reference_split="val",
            tokenizer_num_images=500,
            uniformity_samples=500,
            # Half the embedded training split as iFID's latent bank.
            proxy_train_images=1000,
            num_workers=0,
        ),
        resources=_cpu_resources(),
    )


def micro() -> ExperimentConfig:
    """Seconds per stage: for tests of the plumbing, not of the science."""
    base = debug_cpu()
    return replace(
        base,
        dataset=replace(
            base.dataset,
            embedded=EmbeddedDatasetConfig(
                num_classes=10, image_size=32, train_per_class=12, val_per_class=4
            ),
        ),
        tokenizer=replace(
            base.tokenizer,
            # f2 (8x8 latents), the grid the tests' fixtures and stand-ins are built for.
            arch=TokenizerArchConfig(
                embed_dim=4, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)
            ),
            loss=replace(base.tokenizer.loss, disc_start=4, disc_ndf=8),
            training=_micro_training(batch=16),
        ),
        cache=replace(base.cache, rows_per_shard=64, batch_size=32),
        generator=replace(
            base.generator,
            model=GeneratorModelConfig(name="LightningDiT-Micro/1"),
            training=_micro_training(batch=16, cls=GeneratorTrainingConfig),
        ),
        sampler=replace(base.sampler, num_steps=4),
        evaluation=replace(
            base.evaluation,
            num_samples=40,
            batch_size=20,
            tokenizer_num_images=40,
            uniformity_samples=100,
            # No iFID bank (a second actor pool per tokenizer evaluation): plumbing tests that
            # exercise it set it (tests/test_sweep.py).
            proxy_train_images=0,
            intermediate_samples=20,
        ),
    )


def _cpu_training(
    *, batch: int, steps: int, cls: type[TrainingConfig] = TrainingConfig
) -> TrainingConfig:
    return cls(
        global_batch_size=batch,
        epochs=None,
        steps=steps,
        precision="fp32",
        zero_stage=0,
        compile=False,
        log_every=max(1, steps // 12),
        # Each checkpoint is a Ray Train report, which waits for the controller's next health
        # check (every 0.5 s, `train/driver.py`): a few per run on CPU.
        checkpoint_every=max(1, steps // 2),
    )


def _micro_training(*, batch: int, cls: type[TrainingConfig] = TrainingConfig) -> TrainingConfig:
    # 8 steps that report only at their two checkpoints (4 and 8): every report waits for a
    # Train health check, and eight of them were a fifth of a micro stage.
    return replace(_cpu_training(batch=batch, steps=8, cls=cls), log_every=4)


def _cpu_resources() -> ResourcesConfig:
    return ResourcesConfig(
        use_gpu="no",
        tokenizer_workers=1,
        generator_workers=1,
        cpus_per_worker=1.0,
        # Two points at once on two cores: a third only slows the others (measured).
        max_concurrent_trials=2,
        max_failures=1,
    )


PRESETS = {"paper": paper, "debug_cpu": debug_cpu, "micro": micro}
