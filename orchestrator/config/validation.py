"""Cross-field checks and derived values of an `ExperimentConfig`.

`validate` raises a one-line `ConfigError` naming the offending key; `resolve` fills the fields
left null on purpose (generator channels and grid follow the tokenizer, class count follows the
dataset) so the resolved config, and hence its hash, spells out everything that shapes a result.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

from orchestrator.config.loading import ConfigError
from orchestrator.config.schema import (
    EvaluationConfig,
    ExperimentConfig,
    SamplerConfig,
    TokenizerConfig,
    TrainingConfig,
)

# Keywords a weights field may hold instead of a path.
WEIGHT_KEYWORDS = frozenset({"auto", "hub", "random_init", "none"})
# Patch sizes of the named foundation presets (timm: vit_large_patch14_dinov2.lvd142m, ...mae).
FOUNDATION_PATCH = {"dinov2": 14, "mae": 16}
# Token widths of timm ViT sizes (by the size word in the name), the presets (both ViT-L) and the
# stand-in (`workloads.standin.standin_timm_kwargs`): what RAE's `arch.embed_dim` must equal.
VIT_WIDTHS = {"tiny": 192, "small": 384, "base": 768, "large": 1024, "huge": 1280, "giant": 1536}
FOUNDATION_WIDTH = {"dinov2": 1024, "mae": 1024, "standin": 96}
# The foundation input is resized to grid * patch; beyond this factor the features stop
# describing the image the tokenizer saw (e.g. a 16 px image blown up to 224 for a 16x16 grid).
MAX_FOUNDATION_RESIZE = 2.0


def latent_grid(cfg: ExperimentConfig) -> int:
    return cfg.dataset.resolution // cfg.tokenizer.downsample_factor


def dit_patch_size(model_name: str) -> int:
    match = re.fullmatch(r"LightningDiT-[A-Za-z0-9]+/(\d+)", model_name)
    if match is None:
        raise ConfigError("generator.model.name", f"not a LightningDiT name: {model_name!r}")
    return int(match.group(1))


def foundation_patch_size(cfg: ExperimentConfig) -> int:
    """Patch size of the configured foundation model (the stand-in is trained to fit the grid)."""
    name = cfg.tokenizer.vf.foundation
    if name == "standin":
        return cfg.dataset.resolution // latent_grid(cfg)
    if name in FOUNDATION_PATCH:
        return FOUNDATION_PATCH[name]
    match = re.search(r"patch(\d+)", name)
    if match is None:
        raise ConfigError(
            "tokenizer.vf.foundation",
            f"cannot tell the patch size of {name!r}; use dinov2, mae, standin or a timm ViT name "
            "containing `patch<N>`",
        )
    return int(match.group(1))


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError on the first inconsistency found."""
    _check_dataset(cfg)
    _check_tokenizer(cfg.tokenizer)
    _check_family(cfg)
    _check_grids(cfg)
    _check_generator(cfg)
    _check_evaluation(cfg.evaluation)
    _check_resources(cfg)


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Validate, then fill derived nulls; idempotent."""
    validate(cfg)
    arch = cfg.tokenizer.arch
    if arch.z_channels is None:
        arch = replace(arch, z_channels=arch.embed_dim)
    model = cfg.generator.model
    model = replace(
        model,
        in_channels=model.in_channels if model.in_channels is not None else arch.embed_dim,
        input_size=model.input_size if model.input_size is not None else latent_grid(cfg),
    )
    generator, sampler = replace(cfg.generator, model=model), cfg.sampler
    shift = generator.training.time_shift
    if shift == "auto":
        from workloads.dit.ddt import dimension_shift

        shift = dimension_shift(model.in_channels, model.input_size, model.input_size)
        generator = replace(generator, training=replace(generator.training, time_shift=shift))
    if shift is not None:
        # The same shift in sampling: RAE's s on its reversed time is LightningDiT's 1/s.
        if not math.isclose(sampler.timestep_shift, 1 / shift) and (
            sampler.timestep_shift != SamplerConfig.timestep_shift
        ):
            raise ConfigError(
                "sampler.timestep_shift",
                f"{sampler.timestep_shift} contradicts generator.training.time_shift (it implies "
                f"{1 / shift:.6g}); leave it at its default",
            )
        sampler = replace(sampler, timestep_shift=1 / shift)
    dataset = cfg.dataset
    if dataset.source == "embedded" and dataset.num_classes is None:
        dataset = replace(dataset, num_classes=dataset.embedded.num_classes)
    return replace(
        cfg,
        dataset=dataset,
        tokenizer=replace(cfg.tokenizer, arch=arch),
        generator=generator,
        sampler=sampler,
    )


# --------------------------------------------------------------------------------------------
def _positive(value: float | int | None, path: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(path, f"must be {bound}, got {value!r}")


def _in_range(value: float | None, lo: float, hi: float, path: str, *, hi_open: bool) -> None:
    if value is None:
        return
    ok = lo <= value < hi if hi_open else lo <= value <= hi
    if not ok:
        bracket = ")" if hi_open else "]"
        raise ConfigError(path, f"must be in [{lo}, {hi}{bracket}, got {value!r}")


def _check_weights(value: str, path: str, *, allowed: frozenset[str]) -> None:
    if value in allowed:
        return
    if value in WEIGHT_KEYWORDS:
        raise ConfigError(path, f"`{value}` is not allowed here (use one of {sorted(allowed)})")
    if not Path(value).expanduser().is_file():
        raise ConfigError(path, f"weights file does not exist: {value}")


def _check_file(value: str | None, path: str) -> None:
    if value is not None and not Path(value).expanduser().is_file():
        raise ConfigError(path, f"file does not exist: {value}")


def _check_dataset(cfg: ExperimentConfig) -> None:
    ds = cfg.dataset
    _positive(ds.resolution, "dataset.resolution")
    _positive(ds.num_classes, "dataset.num_classes")
    _positive(ds.max_image_pixels, "dataset.max_image_pixels")
    _positive(ds.max_images, "dataset.max_images")
    _in_range(ds.max_skip_fraction, 0.0, 1.0, "dataset.max_skip_fraction", hi_open=False)
    _check_file(ds.label_map, "dataset.label_map")
    _check_file(ds.val_labels, "dataset.val_labels")
    _check_file(ds.val_synsets, "dataset.val_synsets")
    if ds.val_labels is not None and ds.source != "folder":
        raise ConfigError("dataset.val_labels", "only a `folder` source has a flat val split")
    if ds.source in ("folder", "parquet", "webdataset"):
        local = ds.root is not None and "://" not in ds.root
        if local and not Path(ds.root).expanduser().is_dir():
            raise ConfigError("dataset.root", f"dataset folder does not exist: {ds.root}")
    else:
        emb = ds.embedded
        for key in ("num_classes", "image_size", "train_per_class", "val_per_class"):
            _positive(getattr(emb, key), f"dataset.embedded.{key}")
        if ds.num_classes is not None and ds.num_classes != emb.num_classes:
            raise ConfigError(
                "dataset.num_classes",
                f"{ds.num_classes} differs from dataset.embedded.num_classes={emb.num_classes}",
            )
        if emb.image_size < ds.resolution:
            raise ConfigError(
                "dataset.resolution",
                f"{ds.resolution} exceeds the embedded images' size {emb.image_size}",
            )


def _check_training(t: TrainingConfig, path: str) -> None:
    _positive(t.global_batch_size, f"{path}.global_batch_size")
    _positive(t.gradient_accumulation_steps, f"{path}.gradient_accumulation_steps")
    _positive(t.grad_clip, f"{path}.grad_clip")
    _positive(t.log_every, f"{path}.log_every")
    _positive(t.checkpoint_every, f"{path}.checkpoint_every")
    _positive(t.keep_checkpoints, f"{path}.keep_checkpoints")
    if t.grad_reduce_dtype == "bf16" and t.zero_stage == 3:
        # DeepSpeed ties a ZeRO-3 parameter's all-gather dtype to its reduction dtype
        # (`partition_parameters.get_allgather_dtype`): the EMA and the export would read
        # bf16-rounded weights.
        raise ConfigError(
            f"{path}.grad_reduce_dtype",
            "bf16 is not supported with zero_stage 3 (parameters would be gathered in bf16)",
        )
    _check_length(t.steps, t.epochs, path)


def _check_length(steps: int | None, epochs: float | None, path: str) -> None:
    if (steps is None) == (epochs is None):
        raise ConfigError(path, "set exactly one of `steps` and `epochs`")
    _positive(steps, f"{path}.steps")
    _positive(epochs, f"{path}.epochs")


def _check_margins(cos_margin, distmat_margin, vf_weight, path: str) -> None:
    # Cosines live in [-1, 1], so a margin of 2 or more switches the term off entirely.
    _in_range(cos_margin, 0.0, 2.0, f"{path}.cos_margin", hi_open=True)
    _in_range(distmat_margin, 0.0, 2.0, f"{path}.distmat_margin", hi_open=True)
    _positive(vf_weight, f"{path}.vf_weight", allow_zero=True)


def _check_tokenizer(tok: TokenizerConfig) -> None:
    from workloads.families import FAMILIES  # imports torch: only here

    if tok.family not in FAMILIES:
        from orchestrator.config.loading import closest

        hint = closest(tok.family, FAMILIES)
        extra = f" (did you mean `{hint}`?)" if hint else ""
        raise ConfigError(
            "tokenizer.family", f"unknown family {tok.family!r}{extra}; known: {sorted(FAMILIES)}"
        )
    arch = tok.arch
    _positive(arch.embed_dim, "tokenizer.arch.embed_dim")
    _positive(arch.z_channels, "tokenizer.arch.z_channels")
    _positive(arch.ch, "tokenizer.arch.ch")
    _positive(arch.num_res_blocks, "tokenizer.arch.num_res_blocks")
    if not arch.ch_mult:
        raise ConfigError("tokenizer.arch.ch_mult", "must not be empty")
    for i, mult in enumerate(arch.ch_mult):
        _positive(mult, f"tokenizer.arch.ch_mult[{i}]")
    _in_range(arch.dropout, 0.0, 1.0, "tokenizer.arch.dropout", hi_open=True)
    if arch.ch % 32:
        raise ConfigError(
            "tokenizer.arch.ch", f"must be a multiple of 32 (GroupNorm(32)), got {arch.ch}"
        )

    vf = tok.vf
    if vf.enabled and vf.foundation != "standin":
        check_timm_name(vf.foundation, "tokenizer.vf.foundation")
    _check_margins(vf.cos_margin, vf.distmat_margin, vf.vf_weight, "tokenizer.vf")
    _positive(vf.cos_weight, "tokenizer.vf.cos_weight", allow_zero=True)
    _positive(vf.distmat_weight, "tokenizer.vf.distmat_weight", allow_zero=True)
    if vf.enabled:
        _check_weights(
            vf.weights, "tokenizer.vf.weights", allowed=frozenset({"auto", "hub", "random_init"})
        )
        if vf.foundation == "standin" and vf.weights == "hub":
            raise ConfigError("tokenizer.vf.weights", "the stand-in has no hub weights; use `auto`")

    loss = tok.loss
    for key in ("kl_weight", "perceptual_weight", "disc_weight", "disc_start"):
        _positive(getattr(loss, key), f"tokenizer.loss.{key}", allow_zero=True)
    _positive(loss.disc_num_layers, "tokenizer.loss.disc_num_layers")
    _positive(loss.disc_ndf, "tokenizer.loss.disc_ndf")
    _check_weights(
        loss.lpips_weights,
        "tokenizer.loss.lpips_weights",
        allowed=frozenset({"hub", "random_init", "none"}),
    )
    _check_file(loss.lpips_backbone_weights, "tokenizer.loss.lpips_backbone_weights")
    if loss.lpips_weights == "none" and loss.perceptual_weight > 0:
        raise ConfigError(
            "tokenizer.loss.lpips_weights",
            "is `none` but perceptual_weight > 0 needs LPIPS weights",
        )
    _positive(tok.optimizer.lr, "tokenizer.optimizer.lr")
    for i, beta in enumerate(tok.optimizer.betas):
        _in_range(beta, 0.0, 1.0, f"tokenizer.optimizer.betas[{i}]", hi_open=True)
    _check_training(tok.training, "tokenizer.training")

    if tok.pretrained is not None and tok.init_from is not None:
        raise ConfigError(
            "tokenizer.init_from",
            "is set together with tokenizer.pretrained; a pretrained tokenizer is not trained",
        )
    if vf.proj_fix and not vf.enabled:
        raise ConfigError("tokenizer.vf.proj_fix", "needs a VF loss (foundation is `none`)")

    names = [stage.name for stage in tok.stages]
    if len(set(names)) != len(names):
        raise ConfigError("tokenizer.stages", f"stage names must be unique, got {names}")
    for i, stage in enumerate(tok.stages):
        path = f"tokenizer.stages[{i}]"
        _check_length(stage.steps, stage.epochs, path)
        _check_margins(stage.cos_margin, stage.distmat_margin, stage.vf_weight, path)
        _positive(stage.disc_start, f"{path}.disc_start", allow_zero=True)
    if tok.family == "rae":
        # Its encoder is frozen pretrained weights held as buffers: nothing here applies.
        return
    if any(stage.train == "decoder" for stage in tok.stages) and tok.training.zero_stage == 1:
        # DeepSpeed saves frozen parameters only when it partitions gradients (ZeRO >= 2; ZeRO 0
        # saves the whole module), so a ZeRO-1 checkpoint would lose the frozen encoder.
        raise ConfigError(
            "tokenizer.training.zero_stage",
            "1 drops frozen parameters from checkpoints; a `train: decoder` stage needs 0, 2 or 3",
        )
    if tok.stages and tok.stages[0].train == "decoder" and tok.init_from is None:
        raise ConfigError(
            "tokenizer.stages[0].train",
            "`decoder` freezes a randomly initialised encoder; train it first or set init_from",
        )


def _check_family(cfg: ExperimentConfig) -> None:
    """What a family needs of the rest of the config (tokenizer.family is known by now)."""
    tok = cfg.tokenizer
    if (tok.family == "rae") != (tok.decoder is not None):
        raise ConfigError(
            "tokenizer.decoder",
            "is RAE's ViT decoder: set it for family rae only"
            if tok.family != "rae"
            else "family rae needs its ViT decoder (e.g. {patch_size: 16, width: 1152, depth: 28})",
        )
    if tok.family == "rae":
        _check_rae(tok)
    if cfg.cache.mode == "on_the_fly":
        from workloads.families import get_family  # imports torch: only when asked

        if not get_family(tok.family).frozen_encoder:
            raise ConfigError(
                "cache.mode",
                f"on_the_fly runs the tokenizer's encoder in the generator's workers, but "
                f"{tok.family}'s encoder is trained, not frozen (rae's is): use `cached`",
            )
    if tok.family != "repae":
        return
    if not tok.vf.enabled:
        raise ConfigError(
            "tokenizer.vf.foundation",
            "repae aligns the DiT to a foundation model's patch tokens: name one (not `none`)",
        )
    if cfg.generator.model.head is not None:
        raise ConfigError(
            "generator.model.head", "repae's end-to-end DiT is a plain LightningDiT (no head)"
        )
    if any(stage.train == "decoder" for stage in tok.stages):
        raise ConfigError("tokenizer.stages", "repae trains the encoder end to end (no `decoder`)")


def _check_rae(tok) -> None:
    """RAE's encoder is the frozen foundation model `tokenizer.vf` names: nothing aligns it,
    and its token width is the latent's channel count."""
    if not tok.vf.enabled:
        raise ConfigError(
            "tokenizer.vf.foundation",
            "names rae's frozen encoder (e.g. vit_base_patch14_reg4_dinov2.lvd142m): not `none`",
        )
    name = tok.vf.foundation
    sizes = [width for word, width in VIT_WIDTHS.items() if f"_{word}_" in f"_{name}_"]
    width = FOUNDATION_WIDTH.get(name, sizes[0] if len(sizes) == 1 else None)
    if width is not None and tok.arch.embed_dim != width:
        raise ConfigError(
            "tokenizer.arch.embed_dim",
            f"is {tok.arch.embed_dim}, but rae's encoder {name} gives {width}-channel tokens",
        )
    for key in ("pretrained", "init_from"):
        if getattr(tok, key) is not None:
            # Files from outside are read in the released VAE layouts (storage/pretrained.py).
            raise ConfigError(f"tokenizer.{key}", "is not supported for rae yet (a VAE file)")
    asked = ["tokenizer.vf.proj_fix"] if tok.vf.proj_fix else []
    asked += [
        f"tokenizer.stages[{i}].{key}"
        for i, stage in enumerate(tok.stages)
        for key in ("vf_weight", "cos_margin", "distmat_margin")
        if getattr(stage, key) is not None
    ]
    if asked:
        raise ConfigError(
            asked[0],
            "asks the VF loss of rae, whose encoder is frozen and cannot be aligned "
            "(tokenizer.vf names that encoder; the VF loss is an option of the VAE families)",
        )


def _check_grids(cfg: ExperimentConfig) -> None:
    factor = cfg.tokenizer.downsample_factor
    res = cfg.dataset.resolution
    if res % factor:
        raise ConfigError(
            "dataset.resolution",
            f"{res} is not divisible by the tokenizer's downsampling factor {factor}",
        )
    if not cfg.tokenizer.vf.enabled:
        return
    grid = latent_grid(cfg)
    feature_input = grid * foundation_patch_size(cfg)
    if not 1 / MAX_FOUNDATION_RESIZE <= feature_input / res <= MAX_FOUNDATION_RESIZE:
        raise ConfigError(
            "tokenizer.vf.foundation",
            f"{cfg.tokenizer.vf.foundation} needs a {feature_input}px input for the {grid}x{grid} "
            f"latent grid, more than {MAX_FOUNDATION_RESIZE:g}x away from the {res}px images",
        )


def _check_generator(cfg: ExperimentConfig) -> None:
    gen = cfg.generator
    model = gen.model
    embed_dim = cfg.tokenizer.arch.embed_dim
    if model.in_channels is not None and model.in_channels != embed_dim:
        raise ConfigError(
            "generator.model.in_channels",
            f"{model.in_channels} differs from the tokenizer's embed_dim {embed_dim}",
        )
    grid = latent_grid(cfg)
    if model.input_size is not None and model.input_size != grid:
        raise ConfigError(
            "generator.model.input_size",
            f"{model.input_size} differs from the latent grid {grid} "
            f"(resolution {cfg.dataset.resolution} / downsampling {cfg.tokenizer.downsample_factor})",
        )
    patch = dit_patch_size(model.name)
    if grid % patch:
        raise ConfigError(
            "generator.model.name", f"patch size {patch} does not divide the {grid}x{grid} grid"
        )
    _check_dit_name(model.name)
    if model.head is not None:
        head = model.head
        for key in ("depth", "width", "heads"):
            _positive(getattr(head, key), f"generator.model.head.{key}")
        if head.width % head.heads:
            raise ConfigError(
                "generator.model.head.width", f"{head.width} is not divisible by {head.heads} heads"
            )
        if patch != 1:
            raise ConfigError("generator.model.head", f"DiT^DH needs a /1 trunk, got {model.name}")
        if gen.objective != "rectified_flow":
            raise ConfigError("generator.model.head", "DiT^DH trains with rectified_flow only")
    shift = gen.training.time_shift
    if shift is not None:
        if shift != "auto" and (isinstance(shift, str) or not shift > 0):
            raise ConfigError(
                "generator.training.time_shift", f"must be > 0 or auto, got {shift!r}"
            )
        if gen.objective != "rectified_flow":
            raise ConfigError("generator.training.time_shift", "is a rectified-flow setting")
    _in_range(
        model.class_dropout_prob, 0.0, 1.0, "generator.model.class_dropout_prob", hi_open=True
    )
    _positive(gen.optimizer.lr, "generator.optimizer.lr")
    for i, beta in enumerate(gen.optimizer.betas):
        _in_range(beta, 0.0, 1.0, f"generator.optimizer.betas[{i}]", hi_open=True)
    _in_range(gen.ema.decay, 0.0, 1.0, "generator.ema.decay", hi_open=True)
    _positive(gen.transport.mse_weight, "generator.transport.mse_weight", allow_zero=True)
    _positive(gen.transport.cos_weight, "generator.transport.cos_weight", allow_zero=True)
    _positive(
        gen.transport.uniform_t_after_step,
        "generator.transport.uniform_t_after_step",
        allow_zero=True,
    )
    _check_objective(cfg)
    _positive(gen.latent_multiplier, "generator.latent_multiplier")
    if gen.pretrained_latent_stats is not None and gen.pretrained is None:
        raise ConfigError(
            "generator.pretrained_latent_stats", "is set but generator.pretrained is not"
        )
    _check_training(gen.training, "generator.training")
    if cfg.sampler.cfg_channels is not None and cfg.sampler.cfg_channels > embed_dim:
        raise ConfigError(
            "sampler.cfg_channels",
            f"{cfg.sampler.cfg_channels} exceeds the {embed_dim} latent channels",
        )


def _check_objective(cfg: ExperimentConfig) -> None:
    """DiT's DDPM and rectified flow each need their own sampler; flow-only keys stay off."""
    gen, sampler = cfg.generator, cfg.sampler
    if gen.objective == "rectified_flow":
        if sampler.method == "ddpm":
            raise ConfigError(
                "sampler.method", "`ddpm` samples generator.objective: ddpm, not rectified flow"
            )
        if gen.model.learn_sigma:
            raise ConfigError(
                "generator.model.learn_sigma",
                "a learned variance needs generator.objective: ddpm (rectified flow has none)",
            )
        return
    if sampler.method != "ddpm":
        raise ConfigError(
            "sampler.method",
            f"generator.objective: ddpm needs sampler.method: ddpm, got {sampler.method!r}",
        )
    transport = gen.transport
    for key in ("use_lognorm", "use_cosine_loss", "uniform_t_after_step"):
        if getattr(transport, key):
            raise ConfigError(
                f"generator.transport.{key}",
                "is a rectified-flow setting; with generator.objective: ddpm set it false/null",
            )
    for key in ("timestep_shift", "cfg_interval_start"):
        if getattr(sampler, key):
            raise ConfigError(
                f"sampler.{key}", "must be 0 with sampler.method: ddpm (no time grid)"
            )
    if sampler.num_steps > 1000:
        raise ConfigError("sampler.num_steps", "ddpm respaces 1000 steps: at most 1000")


def _check_dit_name(name: str) -> None:
    from workloads.dit import LightningDiT_models

    if name not in LightningDiT_models:
        from orchestrator.config.loading import closest

        hint = closest(name, LightningDiT_models)
        extra = f" (did you mean `{hint}`?)" if hint else ""
        raise ConfigError("generator.model.name", f"unknown model {name!r}{extra}")


def check_timm_name(name: str, path: str) -> None:
    """A foundation or evaluator model name must be a preset or an architecture timm knows.

    Checked against timm's local registry (no network): a typo otherwise passes `--dry-run` and
    fails only when a trial builds the model on the cluster. Whether a local weights file fits
    the architecture is checked when it is loaded (strictly, naming the file).
    """
    from workloads.foundation import FOUNDATION_PRESETS

    if name in FOUNDATION_PRESETS:
        return
    import timm  # here: timm pulls in torchvision, needed only for names outside the presets

    if timm.is_model(name):
        return
    from orchestrator.config.loading import closest

    known = [*FOUNDATION_PRESETS, *timm.list_models(pretrained=True)]
    hint = closest(name, known)
    extra = f" (did you mean `{hint}`?)" if hint else ""
    raise ConfigError(path, f"{name!r} is neither a preset nor a timm model name{extra}")


def _check_evaluation(e: EvaluationConfig) -> None:
    for key in ("num_samples", "batch_size", "tokenizer_num_images", "intermediate_samples"):
        _positive(getattr(e, key), f"evaluation.{key}")
    _positive(e.uniformity_samples, "evaluation.uniformity_samples", allow_zero=True)
    _positive(e.proxy_train_images, "evaluation.proxy_train_images", allow_zero=True)
    from workloads.metrics.latent_proxies import IFID_NEIGHBOURS  # NumPy only

    if 0 < e.proxy_train_images < IFID_NEIGHBOURS:
        raise ConfigError(
            "evaluation.proxy_train_images",
            f"{e.proxy_train_images} is fewer than the {IFID_NEIGHBOURS} neighbours iFID draws "
            "from (0 turns iFID off)",
        )
    _positive(e.intermediate_every, "evaluation.intermediate_every", allow_zero=True)
    _positive(e.num_workers, "evaluation.num_workers", allow_zero=True)
    if e.inception_weights != "hub":
        _check_file(e.inception_weights, "evaluation.inception_weights")
    if e.fd_dinov2_weights not in (None, "hub"):
        _check_file(e.fd_dinov2_weights, "evaluation.fd_dinov2_weights")
        from workloads.metrics.fd_dinov2 import check_dinov2_weights  # imports torch: only here

        try:
            check_dinov2_weights(Path(e.fd_dinov2_weights).expanduser())
        except ValueError as error:
            raise ConfigError("evaluation.fd_dinov2_weights", str(error)) from None
    _check_file(e.reference_stats, "evaluation.reference_stats")
    if e.reference_stats is not None:
        if e.inception_weights is None:
            raise ConfigError(
                "evaluation.reference_stats",
                "an ADM reference batch holds Inception statistics: it needs "
                "evaluation.inception_weights",
            )
        from workloads.metrics.names import precision_recall_count
        from workloads.metrics.reference import check_reference_batch

        try:
            check_reference_batch(
                Path(e.reference_stats).expanduser(), precision_recall_count(e.num_samples)
            )
        except ValueError as error:
            raise ConfigError("evaluation.reference_stats", str(error)) from None


def _check_resources(cfg: ExperimentConfig) -> None:
    r = cfg.resources
    _positive(r.tokenizer_workers, "resources.tokenizer_workers")
    _positive(r.generator_workers, "resources.generator_workers")
    _positive(r.cpus_per_worker, "resources.cpus_per_worker")
    _positive(r.trial_cpus, "resources.trial_cpus", allow_zero=True)
    _positive(r.gpu_wait_s, "resources.gpu_wait_s", allow_zero=True)
    _positive(r.max_concurrent_trials, "resources.max_concurrent_trials")
    _positive(r.max_failures, "resources.max_failures", allow_zero=True)
    _positive(r.in_worker_data_mb, "resources.in_worker_data_mb", allow_zero=True)
    _positive(r.tflops_per_gpu, "resources.tflops_per_gpu")
    _positive(cfg.cache.num_actors, "cache.num_actors", allow_zero=True)
    for path, workers in (
        ("evaluation.num_workers", cfg.evaluation.num_workers),
        ("cache.num_actors", cfg.cache.num_actors),
    ):
        if workers == 0 and r.use_gpu != "no":
            raise ConfigError(
                path,
                "0 runs the stage in the trial's own process, which holds no GPU: set "
                f"resources.use_gpu: no (it is {r.use_gpu!r}) or give the stage workers",
            )
    _positive(cfg.cache.batch_size, "cache.batch_size")
    _positive(cfg.cache.rows_per_shard, "cache.rows_per_shard")
    _positive(cfg.cache.stats_samples, "cache.stats_samples")
    for name, t in (("tokenizer", cfg.tokenizer.training), ("generator", cfg.generator.training)):
        workers = r.tokenizer_workers if name == "tokenizer" else r.generator_workers
        per_step = workers * t.gradient_accumulation_steps
        if t.global_batch_size % per_step:
            raise ConfigError(
                f"{name}.training.global_batch_size",
                f"{t.global_batch_size} is not divisible by {workers} workers x "
                f"{t.gradient_accumulation_steps} accumulation steps",
            )
