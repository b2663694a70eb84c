"""The human-readable plan of a sweep: what `--dry-run` prints and a sweep logs first."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import ExperimentConfig, SweepConfig, SweepPoint, latent_grid
from orchestrator.evaluation.naming import generation_metric_label
from orchestrator.sweep.resources import describe


def training_length(steps: int | None, epochs: float | None) -> str:
    return f"{steps} steps" if steps is not None else f"{epochs:g} ep"


def tokenizer_length(cfg: ExperimentConfig) -> str:
    tok = cfg.tokenizer
    if not tok.stages:
        return training_length(tok.training.steps, tok.training.epochs)
    return "+".join(training_length(s.steps, s.epochs) for s in tok.stages)


def resources_summary(cfg: ExperimentConfig) -> str:
    r = cfg.resources
    device = {"auto": "gpu if present", "yes": "gpu", "no": "cpu"}[r.use_gpu]
    return f"{r.tokenizer_workers}+{r.generator_workers} workers, {device}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def point_row(point: SweepPoint) -> list[str]:
    cfg, keys = point.config, point.keys
    tok = cfg.tokenizer
    grid = latent_grid(cfg)
    return [
        str(point.index),
        f"{cfg.dataset.resolution}px f{tok.arch.downsample_factor}",
        f"{tok.arch.embed_dim}",
        tok.vf.foundation,
        f"{tok.vf.cos_margin:g}",
        f"{tok.vf.distmat_margin:g}",
        f"{tok.vf.vf_weight:g}",
        tokenizer_length(cfg),
        keys.tokenizer[:8],
        f"{grid}x{grid}x{tok.arch.embed_dim}",
        keys.cache[:8],
        cfg.generator.model.name,
        training_length(cfg.generator.training.steps, cfg.generator.training.epochs),
        keys.generator[:8],
        generation_metric_label(cfg),
        f"{cfg.sampler.method} {cfg.sampler.num_steps} cfg{cfg.sampler.cfg_scale:g}",
        resources_summary(cfg),
    ]


HEADERS = [
    "#",
    "images",
    "d",
    "vf",
    "m1",
    "m2",
    "vf_weight",
    "tokenizer",
    "tok-key",
    "latent",
    "cache-key",
    "generator",
    "length",
    "gen-key",
    "gen-metric",
    "sampler",
    "resources",
]


def format_plan(sweep: SweepConfig, points: list[SweepPoint], path: Path) -> str:
    lines = [
        f"sweep `{sweep.name}` from {path} (preset {sweep.preset}, search {sweep.search.algorithm})"
    ]
    if sweep.description:
        lines.append(sweep.description)
    if points:
        unique = {p.keys.tokenizer for p in points}
        caches = {p.keys.cache for p in points}
        gens = {p.keys.generator for p in points}
        lines.append(
            f"{len(points)} points: {len(unique)} tokenizers, {len(caches)} latent caches, "
            f"{len(gens)} generators, {len(points)} generator evaluations"
        )
        lines.append(table(HEADERS, [point_row(p) for p in points]))
        # What Tune admits per trial (sweep/resources.py); the cluster may lower the concurrency.
        lines.append("resources Tune reserves per trial:")
        lines.extend(f"  point {p.index}: {describe(p.config)}" for p in points)
        first = points[0].config
        lines.append(f"storage: {first.storage}   dataset: {dataset_summary(first)}")
    else:
        opt = sweep.search.optuna
        lines.append(
            f"optuna: {opt.num_samples} samples, objectives "
            + ", ".join(f"{m} ({d})" for m, d in zip(opt.metrics, opt.modes))
        )
        rows = [[key, str(spec)] for key, spec in opt.space.items()]
        lines.append(table(["key", "distribution"], rows))
    return "\n".join(lines)


def dataset_summary(cfg: ExperimentConfig) -> str:
    ds = cfg.dataset
    if ds.source == "embedded":
        e = ds.embedded
        return (
            f"embedded ({e.num_classes} classes, {e.image_size}px, "
            f"{e.train_per_class}/{e.val_per_class} train/val per class, seed {e.seed})"
        )
    root = ds.root if ds.root is not None else "<unset: pass --data-root>"
    return f"folder {root} ({ds.train_split}/{ds.val_split}, {ds.num_classes} classes)"
