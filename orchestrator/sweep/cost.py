"""What a sweep will cost before it starts: FLOPs per stage from the model sizes, GPU-hours at a
throughput, shared stages counted once (what `--dry-run` prints and `--budget` checks).

FLOPs of one forward pass are counted, not guessed: each network is built on PyTorch's `meta`
device (shapes only, no memory, no arithmetic) and run once under `torch.utils.flop_counter`,
which adds 2 x M x N x K for every matmul, convolution and attention product. That covers the
tokenizer's encoder and decoder convolutions, the PatchGAN discriminator, LPIPS' VGG16, the
foundation model and LightningDiT alike (for a DiT it agrees with 2 x per-token parameters x
tokens plus 4 x tokens^2 x width per attention layer; tests/test_cost.py checks B/1 by hand).

Training a network costs 3 forwards (forward + backward for activations and for weights); a
frozen network whose output is differentiated back to its input (LPIPS, the discriminator in the
adversarial term) costs 2; a frozen network only read (the foundation model's target features)
costs 1. Elementwise work, data loading and communication are not counted: they are what the
MFU behind `resources.tflops_per_gpu` absorbs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from orchestrator.config import ExperimentConfig, SweepPoint, latent_grid, to_dict
from orchestrator.train.plan import epoch_steps, generator_stages, run_length, tokenizer_stages

# ImageNet-1k's training split: the size a `folder`/`parquet`/`webdataset` config with 1000
# classes is planned with when no `dataset.max_images` bounds it (the dry run reads no data).
IMAGENET_TRAIN_IMAGES = 1_281_167
# Inception-v3 at 299 px: 5.7 G multiply-adds (Szegedy et al. 2016, Tab. 3) = 11.4 GFLOPs.
INCEPTION_FLOPS = 11.4e9
# Network evaluations per sample of the adaptive dopri5 sampler: 6 stages per accepted step; the
# reference's tolerances take about 20 steps on LightningDiT (an estimate, stated in the plan).
DOPRI5_NFE = 120
STAGES = (
    "tokenizer",
    "tokenizer eval",
    "latent cache",
    "generator",
    "generator eval",
    "intermediate evals",
)


@dataclass(frozen=True)
class StageCost:
    """One stage of one point: `units` units of `flops_per_unit` each (a training step, an image)."""

    stage: str
    key: str  # the stage's content key: points that share it share the work
    units: int
    unit: str
    flops_per_unit: float

    @property
    def flops(self) -> float:
        return self.units * self.flops_per_unit


def gpu_hours(flops: float, tflops_per_gpu: float) -> float:
    return flops / (tflops_per_gpu * 1e12) / 3600.0


def train_images(cfg: ExperimentConfig) -> tuple[int, str]:
    """(training images, where that number comes from)."""
    ds = cfg.dataset
    if ds.source == "embedded":
        e = ds.embedded
        count, source = e.num_classes * e.train_per_class, "embedded dataset"
    elif ds.num_classes == 1000:
        count, source = IMAGENET_TRAIN_IMAGES, "ImageNet-1k train size (assumed)"
    else:
        count, source = IMAGENET_TRAIN_IMAGES, "ImageNet-1k train size (assumed; set max_images)"
    if ds.max_images is not None and ds.max_images < count:
        return ds.max_images, "dataset.max_images"
    return count, source


# --------------------------------------------------------------------------------------------
# Forward FLOPs of each network, counted on the meta device
# --------------------------------------------------------------------------------------------
def counted_flops(build, run) -> float:
    """FLOPs of `run(model)` for `model = build()`, both on the meta device (shapes only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), torch.no_grad():
        model = build()
        with FlopCounterMode(display=False) as counter:
            run(model)
    return float(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def autoencoder_flops(arch: tuple, resolution: int) -> tuple[float, float]:
    """(encoder, decoder) forward FLOPs of one image. `arch` = sorted AutoencoderKL kwargs."""
    import torch

    from workloads.vavae import AutoencoderKL

    kwargs = dict(arch)
    embed_dim = kwargs["embed_dim"]

    def build():
        return AutoencoderKL(**kwargs, resolution=resolution)

    # The modules, not `encode`/`decode`: those check pixel values, which meta tensors lack.
    enc = counted_flops(
        build,
        lambda m: m.quant_conv(
            m.encoder(torch.zeros(1, kwargs["in_channels"], resolution, resolution))
        ),
    )

    def decode(m):
        grid = resolution // m.downsample_factor
        return m.decoder(m.post_quant_conv(torch.zeros(1, embed_dim, grid, grid)))

    dec = counted_flops(build, decode)
    return enc, dec


@functools.lru_cache(maxsize=16)
def vit_decoder_flops(kwargs: tuple) -> float:
    """RAE's ViT decoder on one latent. `kwargs` = sorted `ViTDecoder` keywords."""
    import torch

    from workloads.rae import ViTDecoder

    options = dict(kwargs)
    grid = options["grid"]
    return counted_flops(
        lambda: ViTDecoder(**options),
        lambda m: m(torch.zeros(1, options["latent_dim"], grid, grid)),
    )


def tokenizer_flops(cfg: ExperimentConfig) -> tuple[float, float]:
    """(encoder, decoder) forward FLOPs of one image of the configured tokenizer; RAE's
    encoder is its frozen foundation model."""
    res = cfg.dataset.resolution
    tok = cfg.tokenizer
    if tok.decoder is not None:
        decoder = {**to_dict(tok.decoder), "latent_dim": tok.arch.embed_dim}
        decoder["grid"] = latent_grid(cfg)
        return (
            foundation_flops(tok.vf.foundation, res, latent_grid(cfg)),
            vit_decoder_flops(tuple(sorted(decoder.items()))),
        )
    from orchestrator.storage.models import autoencoder_kwargs

    arch = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in autoencoder_kwargs(cfg).items()
        if k != "resolution"
    }
    return autoencoder_flops(tuple(sorted(arch.items())), res)


@functools.lru_cache(maxsize=16)
def discriminator_flops(in_channels: int, ndf: int, layers: int, resolution: int) -> float:
    import torch

    from workloads.vavae.discriminator import NLayerDiscriminator

    return counted_flops(
        lambda: NLayerDiscriminator(in_channels, ndf, layers),
        lambda m: m(torch.zeros(1, in_channels, resolution, resolution)),
    )


@functools.lru_cache(maxsize=8)
def lpips_flops(resolution: int) -> float:
    """LPIPS of one (target, reconstruction) pair: two VGG16 passes."""
    import torch

    from workloads.foundation import RANDOM_INIT
    from workloads.vavae.lpips import LPIPS

    x = (1, 3, resolution, resolution)
    return counted_flops(lambda: LPIPS(RANDOM_INIT), lambda m: m(torch.zeros(x), torch.zeros(x)))


@functools.lru_cache(maxsize=16)
def foundation_flops(foundation: str, resolution: int, grid: int) -> float:
    """The frozen VF target network on one image (resized to its grid, as in training)."""
    import torch

    from orchestrator.storage.models import foundation_architecture
    from workloads.foundation import RANDOM_INIT, FoundationModel

    timm_name, timm_kwargs = foundation_architecture(foundation, resolution, grid)
    return counted_flops(
        lambda: FoundationModel(timm_name, weights=RANDOM_INIT, timm_kwargs=timm_kwargs),
        lambda m: m(torch.zeros(1, 3, resolution, resolution), (grid, grid)),
    )


@functools.lru_cache(maxsize=32)
def dit_flops(name: str, kwargs: tuple) -> float:
    """LightningDiT forward FLOPs of one latent."""
    import torch

    from workloads.dit import LightningDiT_models

    options = dict(kwargs)
    if options.get("head") is not None:  # DiT^DH: its head's keywords travel as sorted pairs
        options["head"] = dict(options["head"])

    def build():
        model = LightningDiT_models[name](**options).eval()
        model.check_label_range = False  # a value check: meta tensors have no values
        return model

    size, channels = options["input_size"], options["in_channels"]
    return counted_flops(
        build,
        lambda m: m(
            torch.zeros(1, channels, size, size),
            torch.zeros(1),
            torch.zeros(1, dtype=torch.long),
        ),
    )


@functools.lru_cache(maxsize=8)
def proxy_evaluator_flops(num_classes: int, resolution: int) -> float:
    import torch

    from workloads.metrics.proxy import ProxyCNN

    return counted_flops(
        lambda: ProxyCNN(num_classes),
        lambda m: m.head(m.features(torch.zeros(1, 3, resolution, resolution))),
    )


def evaluator_flops(cfg: ExperimentConfig) -> float:
    from orchestrator.evaluation.naming import uses_inception

    if uses_inception(cfg):
        return INCEPTION_FLOPS
    return proxy_evaluator_flops(cfg.dataset.num_classes or 1000, cfg.dataset.resolution)


def generator_forward(cfg: ExperimentConfig) -> float:
    from orchestrator.storage.models import generator_kwargs

    kwargs = generator_kwargs(replace_classes(cfg))
    kwargs["input_size"] = kwargs["input_size"] or latent_grid(cfg)
    kwargs["in_channels"] = kwargs["in_channels"] or cfg.tokenizer.arch.embed_dim
    if kwargs.get("head") is not None:  # hashable for the cache
        kwargs["head"] = tuple(sorted(kwargs["head"].items()))
    return dit_flops(cfg.generator.model.name, tuple(sorted(kwargs.items())))


def replace_classes(cfg: ExperimentConfig) -> ExperimentConfig:
    """`dataset.num_classes: null` (read from the folders at ingest) planned as ImageNet's 1000."""
    from dataclasses import replace

    if cfg.dataset.num_classes is not None:
        return cfg
    return replace(cfg, dataset=replace(cfg.dataset, num_classes=1000))


def sampler_nfe(cfg: ExperimentConfig) -> int:
    """Network evaluations per sample (a CFG step evaluates the conditional and null batch)."""
    s = cfg.sampler
    steps = s.num_steps - 1  # a grid of N points is N - 1 steps
    nfe = {"euler": steps, "heun": 2 * steps, "dopri5": DOPRI5_NFE, "ddpm": s.num_steps}[s.method]
    return nfe * (2 if s.cfg_scale != 1.0 else 1)


# --------------------------------------------------------------------------------------------
# Stages of one point
# --------------------------------------------------------------------------------------------
def point_costs(point: SweepPoint) -> list[StageCost]:
    """Every stage of one point with its FLOPs (pretrained weights cost nothing to train)."""
    cfg, keys = point.config, point.keys
    tok, gen, ev = cfg.tokenizer, cfg.generator, cfg.evaluation
    images, _ = train_images(cfg)
    enc, dec = tokenizer_flops(cfg)
    evaluator = evaluator_flops(cfg)
    costs = []
    if tok.pretrained is None:
        costs += tokenizer_training(cfg, keys.tokenizer, images, enc, dec)
    eval_images = ev.tokenizer_num_images
    # Encode, decode, evaluator features of original and reconstruction; the proxies add the
    # training-latent bank (encode) and one decode + features per interpolation.
    per_image = enc + dec + 2 * evaluator
    bank = 0.0
    if ev.proxy_train_images:
        per_image += dec + evaluator
        bank = min(ev.proxy_train_images, images) * enc / eval_images
    costs.append(
        StageCost("tokenizer eval", keys.tokenizer_eval, eval_images, "image", per_image + bank)
    )
    if gen.pretrained is None:
        views = 2 if cfg.cache.flip else 1
        costs.append(StageCost("latent cache", keys.cache, images, "image", views * enc))
        dit = generator_forward(cfg)
        per_epoch = max(1, epoch_steps(images, gen.training, cfg.resources.generator_workers))
        steps = run_length(generator_stages(cfg, per_epoch))
        batch = gen.training.global_batch_size
        costs.append(StageCost("generator", keys.generator, steps, "step", 3 * dit * batch))
    else:
        dit = generator_forward(cfg)
    per_sample = sampler_nfe(cfg) * dit + dec + evaluator
    costs.append(
        StageCost("generator eval", keys.generator_eval, ev.num_samples, "sample", per_sample)
    )
    if ev.intermediate_every and gen.pretrained is None:
        # ASHA's rounds: `intermediate_samples` samples scored at each round's end.
        rounds = len(range(ev.intermediate_every, gen.training.steps or 0, ev.intermediate_every))
        samples = rounds * ev.intermediate_samples
        if samples:
            costs.append(
                StageCost("intermediate evals", keys.generator, samples, "sample", per_sample)
            )
    return costs


def tokenizer_training(
    cfg: ExperimentConfig, key: str, images: int, enc: float, dec: float
) -> list[StageCost]:
    """The tokenizer's steps, each stage with its own discriminator switch-on."""
    tok = cfg.tokenizer
    res = cfg.dataset.resolution
    batch = tok.training.global_batch_size
    per_epoch = max(1, epoch_steps(images, tok.training, cfg.resources.tokenizer_workers))
    stages = tokenizer_stages(cfg, per_epoch)
    total = run_length(stages)
    if tok.decoder is not None:
        # RAE: the frozen encoder (the foundation model) runs forward only.
        base = enc + 3 * dec
    else:
        base = 3 * (enc + dec)
        if tok.vf.enabled:
            base += foundation_flops(tok.vf.foundation, res, latent_grid(cfg))
    if tok.loss.perceptual_weight > 0:
        base += 2 * lpips_flops(res)
    # With the GAN on: the adversarial term (D forward, backward to its input) and D's own update
    # on a real and a fake image (forward + backward each).
    loss = tok.loss
    gan = 0.0
    if loss.disc_weight > 0:
        gan = (2 + 2 * 3) * discriminator_flops(
            cfg.tokenizer.arch.out_ch, loss.disc_ndf, loss.disc_num_layers, res
        )
    disc_start = min((s.overrides.get("disc_start", loss.disc_start) for s in stages), default=0)
    gan_steps = max(0, total - disc_start) if gan else 0
    flops = batch * (base * total + gan * gan_steps)
    return [StageCost("tokenizer", key, total, "step", flops / total)]


def cache_bytes(cfg: ExperimentConfig) -> int:
    """Bytes of the point's latent cache: every training image (and its flip) as a mean and a
    logvar, or as the mean alone for a frozen encoder (RAE), in `cache.dtype`."""
    from workloads.families import get_family

    images, _ = train_images(cfg)
    moments = 1 if get_family(cfg.tokenizer.family).frozen_encoder else 2
    views = 2 if cfg.cache.flip else 1
    item = 4 if cfg.cache.dtype == "float32" else 2
    grid = latent_grid(cfg)
    return images * views * moments * cfg.tokenizer.arch.embed_dim * grid * grid * item


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepCost:
    points: dict[int, list[StageCost]]
    tflops_per_gpu: float

    def hours(self, flops: float) -> float:
        return gpu_hours(flops, self.tflops_per_gpu)

    def unique(self) -> dict[tuple[str, str], StageCost]:
        """Each shared stage once (points sharing a tokenizer train it once)."""
        return {(c.stage, c.key): c for costs in self.points.values() for c in costs}

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.unique().values())

    @property
    def unshared_flops(self) -> float:
        return sum(c.flops for costs in self.points.values() for c in costs)

    def point_flops(self, index: int) -> float:
        return sum(c.flops for c in self.points[index])

    def generator_side(self, index: int) -> float:
        return sum(c.flops for c in self.points[index] if c.stage in STAGES[2:])

    def pruned_flops(self, keep: int) -> float:
        """Total when generators train for `keep` points only, and the priciest ones at that: the
        least a prune to `keep` saves (Pareto points it also keeps are known only after the
        tokenizer evaluations)."""
        ranked = sorted(self.points, key=self.generator_side, reverse=True)
        return self.kept_flops(set(ranked[:keep]))

    def kept_flops(self, kept: set[int]) -> float:
        """Every tokenizer stage, and the generator stages of the `kept` points only."""
        stages = {
            (c.stage, c.key): c
            for index, costs in self.points.items()
            for c in costs
            if index in kept or c.stage in STAGES[:2]
        }
        return sum(c.flops for c in stages.values())


def sweep_cost(points: list[SweepPoint], tflops_per_gpu: float | None = None) -> SweepCost:
    """The plan at `tflops_per_gpu` (a `--calibrate` measurement), else the configured one."""
    tflops = tflops_per_gpu or points[0].config.resources.tflops_per_gpu
    return SweepCost({p.index: point_costs(p) for p in points}, tflops)


def calibrate(cfg: ExperimentConfig, steps: int = 3) -> tuple[float, str]:
    """(achieved TFLOP/s, device): a few real training steps of `cfg`'s tokenizer autoencoder
    and generator on the local device (CUDA when present, batch 32, bf16 autocast unless the
    generator trains in fp32; else CPU, batch 2), after one warm-up step each,
    timed, divided into the FLOPs the counter gives the same steps. Random weights and data:
    the arithmetic, not the values, is what takes the time."""
    import time

    import torch

    from orchestrator.storage.models import generator_kwargs, tokenizer_spec
    from workloads.dit import LightningDiT_models

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # A GPU needs a real batch to be busy; a CPU finishes a tiny one in seconds.
    batch = 32 if cuda else 2
    # Training's autocast (precision `auto` = bf16 on GPUs): the throughput a run would see.
    bf16 = cuda and cfg.generator.training.precision != "fp32"
    cfg = replace_classes(cfg)
    res, grid = cfg.dataset.resolution, latent_grid(cfg)
    kwargs = generator_kwargs(cfg)
    kwargs["input_size"] = kwargs["input_size"] or grid
    kwargs["in_channels"] = kwargs["in_channels"] or cfg.tokenizer.arch.embed_dim
    dit = LightningDiT_models[cfg.generator.model.name](**kwargs).to(device)
    tokenizer = tokenizer_spec(cfg).build().train().to(device)
    images = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    latents = torch.randn(batch, kwargs["in_channels"], grid, grid, device=device)
    t, y = torch.rand(batch, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    enc, dec = tokenizer_flops(cfg)

    def tokenizer_step():
        tokenizer.decode(tokenizer.encode(images).sample()).square().mean().backward()

    work = [
        (tokenizer_step, 3 * (enc + dec) * batch),
        (lambda: dit(latents, t, y).square().mean().backward(), 3 * generator_forward(cfg) * batch),
    ]
    seconds = flops = 0.0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    for step, cost in work:
        with autocast:
            step()  # warm-up: allocation, kernel selection
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        with autocast:
            for _ in range(steps):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - began
        flops += steps * cost
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return flops / seconds / 1e12, name


def fmt_flops(flops: float) -> str:
    if flops <= 0:
        return "0"
    exponent = min(int(math.log10(flops) // 3), 7)
    unit = ["", "K", "M", "G", "T", "P", "E", "Z"][max(exponent, 0)]
    return f"{flops / 10 ** (3 * max(exponent, 0)):.3g} {unit}FLOP"


def fmt_hours(hours: float) -> str:
    if hours == 0:
        return "0 GPU-h"
    return f"{hours:.3g} GPU-h" if hours >= 0.01 else f"{hours * 3600:.3g} GPU-s"
