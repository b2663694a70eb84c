"""The typed configuration tree of one frontier point (and of a sweep over many).

Defaults are the paper recipe (arXiv 2501.01423 and the reference code at 2725fed); the
`debug_cpu` preset in `presets.py` shrinks everything to a 2-core laptop. Key names follow the
reference (`cos_margin`, `distmat_margin`, `vf_weight`, `cfg_interval_start`, `timestep_shift`,
`use_qknorm`, ...) so every number maps onto the paper.

Weight sources (`weights` fields) are one of: `"hub"` (download through timm / torchvision when
online), `"random_init"` (tests only: results are not meaningful), a local file path, or for
the foundation model `"auto"` (hub for timm models; for `standin`, trained once on the dataset
and cached by its identity). `lpips_weights: none` runs without LPIPS (perceptual_weight 0).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Literal

from workloads.sampler_spec import SamplerMethod, SamplerSpec

Precision = Literal["auto", "fp32", "bf16"]
NonFinitePolicy = Literal["skip", "stop"]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EmbeddedDatasetConfig:
    """The procedural class-conditional dataset shipped with the repo (no download needed)."""

    num_classes: int = 10
    image_size: int = 32
    train_per_class: int = 200
    val_per_class: int = 50
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    # `folder`: an ImageNet-style tree `<root>/<split>/<class>/*.JPEG` (a flat `<root>/val/`
    # with `val_labels`); `parquet`: Hugging Face-layout shards (`image.bytes` + `label`);
    # `webdataset`: tars of `<key>.jpg` + `<key>.cls`; both local or s3:// / gs://;
    # `embedded`: the procedural set written under `root`.
    source: Literal["folder", "parquet", "webdataset", "embedded"] = "folder"
    # For `embedded`, where it is written (null = under the storage dir, keyed by the dataset
    # identity).
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    resolution: int = 256
    # Tokenizer training view: `random` is the reference's (short side to `resolution`,
    # bilinear, a random square crop per sample and epoch, no flip); `center` the fixed ADM
    # centre crop. Latent extraction always uses the ADM crop + flip, as the reference does.
    train_crop: Literal["random", "center"] = "random"
    # Null = the number of class folders (embedded: `embedded.num_classes`).
    num_classes: int | None = 1000
    # Optional file mapping class-folder name -> label index (one `name index` pair per line).
    label_map: str | None = None
    # A flat `<root>/<val_split>/` labelled by this file: Kaggle's `LOC_val_solution.csv` or
    # ILSVRC's ground-truth list (one 1-based ILSVRC2012_ID per line, files in sorted order).
    val_labels: str | None = None
    # ILSVRC's ID list needs the devkit's synsets in ILSVRC2012_ID order (one wnid per line).
    val_synsets: str | None = None
    # The ingestion stage fails when more than this fraction of files had to be skipped.
    max_skip_fraction: float = 0.01
    # Decompression-bomb guard: images with more pixels are skipped (PIL's own default limit).
    max_image_pixels: int = 89_478_485
    # Cap on images per split (debugging); null = all.
    max_images: int | None = None
    embedded: EmbeddedDatasetConfig = field(default_factory=EmbeddedDatasetConfig)


# --------------------------------------------------------------------------------------------
# Tokenizer (VA-VAE)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TokenizerArchConfig:
    """`AutoencoderKL` constructor arguments; the default is the released f16d32."""

    embed_dim: int = 32
    # The reference sets z_channels = embed_dim; null keeps them tied.
    z_channels: int | None = None
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    # Null = the decoder's levels attend where the encoder's do; MAR's KL-16 has `[]` here.
    decoder_attn_resolutions: tuple[int, ...] | None = None
    dropout: float = 0.0
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = True

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True, kw_only=True)
class ViTDecoderConfig:
    """RAE's ViT decoder (family `rae`); the default is its ViT-XL (bytetriper/RAE@a4d18c4
    configs/decoder/ViTXL/config.json: 28 layers, width 1152, 16 heads, MLP 4096, patch 16)."""

    # Image pixels per latent cell: RAE reads 224 px (16 x 16 tokens of DINOv2's patch 14) and
    # decodes 256 px, so the decoder's patch, not the encoder's, is the downsampling factor.
    patch_size: int = 16
    width: int = 1152
    depth: int = 28
    heads: int = 16
    mlp_dim: int = 4096


@dataclass(frozen=True, kw_only=True)
class VFLossConfig:
    """Vision-foundation alignment (paper §3; reference `contperceptual.py`)."""

    # "none" trains a plain LDM tokenizer (the paper's no-VF baseline).
    # "dinov2" | "mae" | "standin" | any timm ViT name | "none".
    foundation: str = "dinov2"
    weights: str = "auto"
    # The reference feeds the VAE's [-1, 1] tensor straight into DINOv2 (issue #78: "a small
    # bug"); "imagenet" applies mean/std normalisation instead.
    input_norm: Literal["minus_one_one", "imagenet"] = "minus_one_one"
    cos_margin: float = 0.5
    distmat_margin: float = 0.25
    vf_weight: float = 0.1
    cos_weight: float = 1.0
    distmat_weight: float = 1.0
    # Freeze the VF projection (`linear_proj`) at its initial or loaded weights: the
    # reference's `proj_fix`, for fine-tuning from a tokenizer whose projection is already aligned.
    proj_fix: bool = False

    @property
    def enabled(self) -> bool:
        return self.foundation != "none"


@dataclass(frozen=True, kw_only=True)
class TokenizerLossConfig:
    kl_weight: float = 1e-6
    perceptual_weight: float = 1.0
    lpips_weights: str = "hub"
    # torchvision VGG16 weights, when `lpips_weights` holds only LPIPS's linear layers (the
    # `vgg.pth` of taming-transformers / LPIPS v0.1); `hub` downloads both.
    lpips_backbone_weights: str | None = None
    disc_weight: float = 0.5
    # Counted in real iterations. The reference's 5001 counts Lightning optimizer steps, two per
    # iteration under manual optimization, so it switches the GAN on at iteration 2501.
    disc_start: int = 2501
    disc_num_layers: int = 3
    disc_ndf: int = 64


@dataclass(frozen=True, kw_only=True)
class AdamConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    eps: float = 1e-8


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """How long and how a workload trains; the length is `steps` or `epochs` (one of them)."""

    global_batch_size: int = 256
    epochs: float | None = 50.0
    steps: int | None = None
    gradient_accumulation_steps: int = 1
    grad_clip: float | None = None
    precision: Precision = "fp32"
    # dtype of the gradient all-reduce / reduce-scatter between workers. fp32 = the reference's
    # recipe (accelerate bf16 autocast: fp32 master weights and fp32 gradient reduction);
    # bf16 halves the traffic at the cost of rounding every reduced gradient.
    grad_reduce_dtype: Literal["fp32", "bf16"] = "fp32"
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    log_every: int = 50
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2
    nonfinite: NonFinitePolicy = "stop"


@dataclass(frozen=True, kw_only=True)
class GeneratorTrainingConfig(TrainingConfig):
    # Shift of the training times t -> t / (s + (1 - s) t) (ours: t = 0 noise), which moves them
    # toward noise for s > 1, and the same shift in sampling (the sampler's timestep_shift
    # becomes 1/s). `auto` = RAE's sqrt(C*H*W / 4096) of the latent (src/train.py L137-139:
    # 6.93 for 768x16x16); null = no shift (LightningDiT).
    time_shift: float | Literal["auto"] | None = None


@dataclass(frozen=True, kw_only=True)
class TokenizerStageConfig:
    """One stage of a staged recipe; unset fields inherit the tokenizer's values."""

    name: str
    epochs: float | None = None
    steps: int | None = None
    vf_weight: float | None = None
    cos_margin: float | None = None
    distmat_margin: float | None = None
    disc_start: int | None = None
    # `decoder`: freeze the encoder (and the VF projection) and train the decoder alone, with the
    # family's training-only augmentations off (l-DeTok's decoder fine-tune, DeTok README).
    train: Literal["all", "decoder"] = "all"


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    # Which tokenizer family trains (`workloads.families.FAMILIES`): vavae (LDM/VA-VAE, the VF
    # loss an option), eqvae, detok, ... Each changes only how a training step views the batch.
    family: str = "vavae"
    arch: TokenizerArchConfig = field(default_factory=TokenizerArchConfig)
    vf: VFLossConfig = field(default_factory=VFLossConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    optimizer: AdamConfig = field(default_factory=AdamConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # Empty = one stage of `training`'s length with the values above (the 50-epoch tokenizers of
    # Tab. 2). The released tokenizer used three stages (100/15/15 epochs); see paper_release.yaml.
    stages: tuple[TokenizerStageConfig, ...] = ()
    # A tokenizer file from outside (path or URI): the released VA-VAE `.pt`, an SD-VAE
    # `.ckpt`/`.safetensors` (LDM or diffusers keys), MAR's `kl16.ckpt`, or one of our exports.
    # Loaded strictly into `arch` and used as is: no tokenizer training. The stage key hashes
    # the file's content, so a changed file is a new point.
    pretrained: str | None = None
    # The same kinds of file as the first stage's starting weights (the reference's
    # `init_weight`: fine-tuning on one's own data); training then runs as configured.
    init_from: str | None = None
    # RAE's ViT decoder (family `rae` only; its encoder is the frozen `vf.foundation` and
    # `arch.embed_dim` its width). Null for the convolutional VAE families, which use `arch`.
    decoder: ViTDecoderConfig | None = None

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent cell."""
        if self.decoder is not None:
            return self.decoder.patch_size
        return self.arch.downsample_factor


# --------------------------------------------------------------------------------------------
# Latent cache
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LatentCacheConfig:
    # Encode each image and its horizontal flip (the reference pre-extracts both).
    flip: bool = True
    # Per-channel mean/std from this many samples (reference: 10k random images), or all.
    stats_samples: int = 10_000
    rows_per_shard: int = 10_000
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # `on_the_fly` (a frozen encoder only, RAE): the generator's workers encode each batch of
    # images themselves, as RAE's `train.py` does, and the cache holds only the `stats_samples`
    # images the latent statistics come from (393 KB per image and view for RAE's DINOv2-B
    # latent, about 1 TB for ImageNet-1k with flips, is what this avoids).
    mode: Literal["cached", "on_the_fly"] = "cached"
    # Execution only (not part of the cache identity):
    batch_size: int = 64
    # Null = the trial's whole share (sweep/resources.py); 0 = no pool: the trial's own process
    # encodes (CPU only), as for `evaluation.num_workers`.
    num_actors: int | None = None


# --------------------------------------------------------------------------------------------
# Generator (LightningDiT)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DiTHeadConfig:
    """RAE's wide, shallow DDT head on top of the named LightningDiT trunk (DiT^DH)."""

    # DiT^DH-XL: 2 blocks of width 2048, 16 heads (RAE configs/stage2/.../DiTDH-XL_DINOv2-B.yaml).
    depth: int = 2
    width: int = 2048
    heads: int = 16


@dataclass(frozen=True, kw_only=True)
class GeneratorModelConfig:
    name: str = "LightningDiT-XL/1"
    # Null = follow the tokenizer (embed_dim) and the latent grid; set explicitly, they are checked.
    in_channels: int | None = None
    input_size: int | None = None
    class_dropout_prob: float = 0.1
    learn_sigma: bool = False
    use_qknorm: bool = False
    use_swiglu: bool = True
    use_rope: bool = True
    use_rmsnorm: bool = True
    wo_shift: bool = False
    # Null = a plain LightningDiT; set = DiT^DH: `name` is the trunk, this the DDT head.
    head: DiTHeadConfig | None = None


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    """Rectified flow: x_t = t*x1 + (1-t)*x0, t=0 noise, t=1 data, velocity target."""

    use_lognorm: bool = True
    # The 800-epoch run switched logit-normal t to uniform at ~480 epochs; null = never.
    uniform_t_after_step: int | None = None
    use_cosine_loss: bool = True
    mse_weight: float = 1.0
    cos_weight: float = 1.0


@dataclass(frozen=True, kw_only=True)
class AdamWConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    eps: float = 1e-8


@dataclass(frozen=True, kw_only=True)
class EMAConfig:
    decay: float = 0.9999


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    # rectified_flow: the LightningDiT transport below. ddpm: DiT's own objective (paper Tab. 1,
    # rung 0): 1000-step linear-beta DDPM, epsilon prediction, with `model.learn_sigma` the
    # learned variance and hybrid loss; sampled by `sampler.method: ddpm`.
    objective: Literal["rectified_flow", "ddpm"] = "rectified_flow"
    model: GeneratorModelConfig = field(default_factory=GeneratorModelConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    optimizer: AdamWConfig = field(default_factory=AdamWConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    training: GeneratorTrainingConfig = field(
        default_factory=lambda: GeneratorTrainingConfig(
            global_batch_size=1024,
            epochs=None,
            steps=80_000,
            precision="auto",
            zero_stage=1,
            compile=True,
            log_every=100,
            checkpoint_every=20_000,
        )
    )
    # true: z_in = (z - mean) / std * latent_multiplier with the latent cache's per-channel
    # statistics (the release); false: z_in = z * latent_multiplier only (SD-VAE / DiT, 0.18215).
    latent_norm: bool = True
    latent_multiplier: float = 1.0
    # A LightningDiT file from outside (the released `.pt` with `ema`/`model` entries, a bare
    # state dict or our `ema.safetensors`): no generator training, no latent cache; generation
    # and evaluation run with `sampler`. Its latent statistics (the reference's
    # `latents_stats.pt`, {mean, std} of shape (1, C, 1, 1)) come from
    # `pretrained_latent_stats`; null = `latents_stats.pt` in the checkpoint's directory.
    pretrained: str | None = None
    pretrained_latent_stats: str | None = None

    @property
    def latent_stats_file(self) -> str | None:
        """Where a pretrained generator's latent statistics are read (None: not pretrained)."""
        if self.pretrained is None:
            return None
        if self.pretrained_latent_stats is not None:
            return self.pretrained_latent_stats
        # posixpath, not pathlib: `s3://bucket/dir/x.pt` keeps its scheme.
        return posixpath.join(posixpath.dirname(self.pretrained), "latents_stats.pt")


# --------------------------------------------------------------------------------------------
# Sampling and evaluation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SamplerConfig(SamplerSpec):
    """The sampler settings, defined once in `workloads.samplers.SamplerSpec` (fields, meaning,
    checks); the config only sets the paper's defaults: the 64-epoch XL/1 setting that gives
    FID 2.11 (configs/reproductions/*_64ep_cfg). `atol`/`rtol` keep SamplerSpec's."""

    method: SamplerMethod = "euler"
    # Grid points, as the reference: 250 points = 249 Euler steps.
    num_steps: int = 250
    timestep_shift: float = 0.3
    cfg_scale: float = 10.0
    cfg_interval_start: float = 0.10
    # 3 reproduces the DiT legacy every reported number depends on; null guides all channels.
    cfg_channels: int | None = 3


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    num_samples: int = 50_000
    label_policy: Literal["uniform", "balanced"] = "uniform"
    seed: int = 0
    batch_size: int = 64
    # TF-ported Inception weights (pt_inception-2015-12-05): a local file, or `hub` to download
    # torch-fidelity's copy once. Null = no Inception: the embedded default then reports the
    # honest FD-proxy of its own evaluator network instead of a FID.
    inception_weights: str | None = "hub"
    # ADM-style reference statistics (.npz with mu/sigma); null = computed from `reference_split`.
    reference_stats: str | None = None
    reference_split: str = "train"
    # Reconstruction metrics run on this many images of the validation split (paper: 50K val).
    tokenizer_num_images: int = 50_000
    # Uniformity of the latent space (paper Tab. 6), a cheap generation proxy; 0 = off.
    uniformity_samples: int = 2_000
    # Training images (a seeded sample; the whole split when smaller) the tokenizer evaluation
    # encodes as iFID's latent bank (arXiv 2603.05630: each validation latent is SLERPed with
    # one of its 10 nearest training latents); 0 = no iFID. The paper encodes the whole set.
    proxy_train_images: int = 10_000
    # FD_DINOv2 of reconstructions (`rfd_dinov2_<count>`: DINOv2 ViT-L/14 CLS features as
    # dgm-eval / EDM2 compute them): `hub`, a local weights file, or null = not reported.
    fd_dinov2_weights: str | None = None
    # Cheap intermediate generator metric (for ASHA) every this many steps; 0 = off.
    intermediate_every: int = 0
    intermediate_samples: int = 256
    # Actors per evaluation pool; null = the trial's whole share (never more, sweep/resources.py);
    # 0 = no pool: the trial's own process scores (CPU only; no actor to start per stage).
    num_workers: int | None = None


# --------------------------------------------------------------------------------------------
# Resources, tracking, the experiment
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ResourcesConfig:
    # Resolved once per sweep from the cluster; `yes` waits up to `gpu_wait_s` for an
    # autoscaler to add GPU nodes, then fails (sweep/resources.py).
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    gpu_wait_s: float = 300.0
    tokenizer_workers: int = 8
    generator_workers: int = 8
    cpus_per_worker: float = 4.0
    # CPUs of each trial's driver, which runs on the head node (a KubeRay head has none: the
    # driver mostly waits on its Train run and pools, which bring their own).
    trial_cpus: float = 0.0
    # An upper bound: the sweep runs fewer at once when the cluster holds fewer trials (and
    # Optuna's searcher is limited to the same number).
    max_concurrent_trials: int = 1
    # Restarts of a training stage's worker group from its last checkpoint (Ray Train): the
    # only retry layer; Tune never reruns a failed trial (ARCHITECTURE.md, failures).
    max_failures: int = 2
    # Training data of at most this many MB as read (rows x bytes per row: float32 images, or
    # the latent cache's moments as stored) is fetched by each Train rank in its own process;
    # larger data streams through a Ray Data pipeline per rank (`orchestrator/data/stream.py`).
    # 0: always stream.
    in_worker_data_mb: float = 256.0
    # Sustained TFLOP/s per GPU the cost plan (`--dry-run`, `--budget`) converts FLOPs with:
    # an H100 SXM's 989 dense bf16 TFLOP/s at 40 % MFU (model FLOPs utilisation).
    tflops_per_gpu: float = 400.0


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    # Null = $MLFLOW_TRACKING_URI, else a SQLite store under the storage dir.
    tracking_uri: str | None = None
    experiment_name: str | None = None
    system_metrics: bool = True
    # Log the reconstruction and sample grids to MLflow (they are always written to storage).
    log_images: bool = True


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One frontier point: tokenizer -> tokenizer eval -> cache -> generator -> generator eval."""

    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    cache: LatentCacheConfig = field(default_factory=LatentCacheConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Where every stage writes (checkpoints, caches, MLflow store): a shared path on a cluster.
    storage: str = "./runs"


# --------------------------------------------------------------------------------------------
# Sweep
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class OptunaConfig:
    num_samples: int = 16
    # Base names (`fid`) resolve to the counted name the config reports (`fid_10k`).
    metrics: tuple[str, ...] = ("rfid", "fid")
    modes: tuple[Literal["min", "max"], ...] = ("min", "min")
    # dotted key -> {type: choice|uniform|loguniform|randint, values|low|high}
    space: dict[str, dict[str, object]] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Optional ASHA early stopping on an intermediate generator metric.

    Needs `evaluation.intermediate_every` > 0: the generator then trains in rounds of that many
    steps, each scored by `fd_intermediate` (lower is better), and ASHA's rungs fall on rounds.
    """

    type: Literal["none", "asha"] = "none"
    metric: str = "fd_intermediate"
    grace_period: int = 1  # rounds every trial runs before it can be stopped
    reduction_factor: int = 2


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Train generators only where a cheap proxy says they matter (issue 20).

    Every tokenizer and its evaluation run first; then generators train for the `keep` best
    points by `proxy` (or the best `keep_fraction` of them) plus every point on the
    (reconstruction, proxy) Pareto set; the others are reported as `pruned`.
    """

    # A tokenizer-evaluation metric, base (`ifid`) or counted (`ifid_10k`) name.
    proxy: str = "ifid"
    keep: int | None = None
    keep_fraction: float | None = None
    # Also train every point on the (reconstruction, proxy) Pareto set; false = exactly `keep`.
    keep_pareto: bool = True

    @property
    def enabled(self) -> bool:
        return self.keep is not None or self.keep_fraction is not None

    def kept(self, points: int) -> int:
        """How many points the proxy keeps (the Pareto set may add more)."""
        if self.keep is not None:
            return self.keep
        return max(1, round(self.keep_fraction * points))


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    algorithm: Literal["grid", "optuna"] = "grid"
    # dotted key -> values; the cartesian product is swept.
    grid: dict[str, tuple[object, ...]] = field(default_factory=dict)
    # Explicit points (dotted key -> value), each crossed with the grid.
    points: tuple[dict[str, object], ...] = ()
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)


@dataclass(frozen=True, kw_only=True)
class FrontierConfig:
    """Axes of the frontier chart; "auto" picks rFID/gFID when Inception is configured."""

    x: str = "auto"
    y: str = "auto"


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str
    description: str = ""
    preset: Literal["paper", "debug_cpu", "micro"] = "paper"
    base: dict[str, object] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
