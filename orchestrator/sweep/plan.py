"""The human-readable plan of a sweep: what `--dry-run` prints and a sweep logs first."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import ExperimentConfig, SweepConfig, SweepPoint, latent_grid
from orchestrator.evaluation.naming import generation_metric_label, reported_metrics
from orchestrator.sweep.cost import (
    STAGES,
    SweepCost,
    cache_bytes,
    fmt_flops,
    fmt_hours,
    train_images,
)
from orchestrator.sweep.resources import describe

# The prune a plan prices when the space configures none (issue 20: "what `keep: 3` saves").
ILLUSTRATIVE_KEEP = 3


def training_length(steps: int | None, epochs: float | None) -> str:
    return f"{steps} steps" if steps is not None else f"{epochs:g} ep"


# Shown in place of a training length (and its settings) for weights loaded from outside.
PRETRAINED = "pretrained"


def tokenizer_length(cfg: ExperimentConfig) -> str:
    tok = cfg.tokenizer
    if tok.pretrained is not None:
        return PRETRAINED
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


def fmt_bytes(size: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size / 1e3:.3g} kB"


def point_row(point: SweepPoint) -> list[str]:
    cfg, keys = point.config, point.keys
    tok = cfg.tokenizer
    grid = latent_grid(cfg)
    gen = cfg.generator
    from workloads.families import get_family  # imports torch: only once points exist

    # VF settings shape a trained tokenizer only; a pretrained generator needs no latent cache.
    # REPA-E's and RAE's `vf` names their foundation model (REPA target, frozen encoder) and
    # runs no VF loss: no margins.
    if tok.pretrained is not None:
        vf = ["-"] * 4
    elif not get_family(tok.family).uses_vf_loss:
        vf = [tok.vf.foundation, "-", "-", "-"]
    else:
        vf = [
            tok.vf.foundation,
            f"{tok.vf.cos_margin:g}",
            f"{tok.vf.distmat_margin:g}",
            f"{tok.vf.vf_weight:g}",
        ]
    return [
        str(point.index),
        f"{cfg.dataset.resolution}px f{tok.downsample_factor}",
        f"{tok.arch.embed_dim}",
        *vf,
        tokenizer_length(cfg),
        keys.tokenizer[:8],
        f"{grid}x{grid}x{tok.arch.embed_dim}",
        "-" if gen.pretrained is not None else keys.cache[:8],
        gen.model.name,
        (
            PRETRAINED
            if gen.pretrained is not None
            else training_length(gen.training.steps, gen.training.epochs)
        ),
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


def format_plan(
    sweep: SweepConfig, points: list[SweepPoint], path: Path, cost: SweepCost | None = None
) -> str:
    lines = [
        f"sweep `{sweep.name}` from {path} (preset {sweep.preset}, search {sweep.search.algorithm})"
    ]
    if sweep.description:
        lines.append(sweep.description)
    if points:
        unique = {p.keys.tokenizer for p in points}
        # A pretrained generator brings its latent statistics: its point builds no cache.
        caches = {p.keys.cache for p in points if p.config.generator.pretrained is None}
        gens = {p.keys.generator for p in points}
        lines.append(
            f"{len(points)} points: {len(unique)} tokenizers, {len(caches)} latent caches, "
            f"{len(gens)} generators, {len(points)} generator evaluations"
        )
        lines.append(table(HEADERS, [point_row(p) for p in points]))
        sizes = {
            p.keys.cache: cache_bytes(p.config)
            for p in points
            if p.config.generator.pretrained is None
        }
        if sizes:
            lines.append(
                "latent caches on storage: "
                + ", ".join(f"{key[:8]} {fmt_bytes(size)}" for key, size in sizes.items())
            )
        if sweep.search.points:
            lines += point_changes(points)
        lines.extend(metrics_lines(points))
        # What Tune admits per trial (sweep/resources.py); the cluster may lower the concurrency.
        lines.append("resources Tune reserves per trial:")
        lines.extend(f"  point {p.index}: {describe(p.config)}" for p in points)
        first = points[0].config
        lines.append(f"storage: {first.storage}   dataset: {dataset_summary(first)}")
        lines.extend(pretrained_files(points))
        if cost is not None:
            lines.extend(cost_lines(sweep, points, cost))
    else:
        opt = sweep.search.optuna
        lines.append(
            f"optuna: {opt.num_samples} samples, objectives "
            + ", ".join(f"{m} ({d})" for m, d in zip(opt.metrics, opt.modes))
        )
        rows = [[key, str(spec)] for key, spec in opt.space.items()]
        lines.append(table(["key", "distribution"], rows))
    return "\n".join(lines)


def pretrained_files(points: list[SweepPoint]) -> list[str]:
    """One line per checkpoint from outside: its content hash, or that it cannot be read here
    (a run checks every one before it starts and stops with exit 2)."""
    from orchestrator.storage.store import content_digest

    files: dict[str, str] = {}
    for point in points:
        tok, gen = point.config.tokenizer, point.config.generator
        for key, uri in (
            ("tokenizer.pretrained", tok.pretrained),
            ("tokenizer.init_from", tok.init_from),
            ("generator.pretrained", gen.pretrained),
            ("generator latent stats", gen.latent_stats_file if gen.latent_norm else None),
        ):
            if uri is not None:
                files.setdefault(uri, key)
    lines = []
    for uri, key in files.items():
        digest = content_digest(uri)
        state = f"sha256 {digest}" if digest else "NOT READABLE HERE (a run stops with exit 2)"
        lines.append(f"{key}: {uri}  {state}")
    return lines


def point_changes(points: list[SweepPoint]) -> list[str]:
    """What each explicit point sets beyond the base, keys the table's columns may not show.

    A ladder (every point keeps all keys of the one before, like paper Tab. 1's rungs) reads as
    the change each rung adds; other points are listed whole.
    """
    ladder = all(set(a.overrides) <= set(b.overrides) for a, b in zip(points, points[1:]))
    title = "what each point adds to the one before" if ladder else "what each point sets"
    lines = [f"point overrides ({title}):"]
    previous: dict[str, object] = {}
    for point in points:
        shown = {
            k: v for k, v in point.overrides.items() if not ladder or previous.get(k, ...) != v
        }
        text = ", ".join(f"{k}={v}" for k, v in shown.items())
        lines.append(f"  {point.index}: {text or '(base)'}")
        previous = point.overrides
    return lines


def metrics_lines(points: list[SweepPoint]) -> list[str]:
    """The metrics each point reports, named as MLflow, the CSV and the chart receive them."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for point in points:
        groups.setdefault(reported_metrics(point.config), []).append(point.index)
    if len(groups) == 1:
        return [f"metrics (every point): {', '.join(next(iter(groups)))}"]
    return [
        f"metrics (points {', '.join(map(str, indices))}): {', '.join(names)}"
        for names, indices in groups.items()
    ]


def dataset_summary(cfg: ExperimentConfig) -> str:
    ds = cfg.dataset
    if ds.source == "embedded":
        e = ds.embedded
        return (
            f"embedded ({e.num_classes} classes, {e.image_size}px, "
            f"{e.train_per_class}/{e.val_per_class} train/val per class, seed {e.seed})"
        )
    root = ds.root if ds.root is not None else "<unset: pass --data-root>"
    classes = "classes from the data" if ds.num_classes is None else f"{ds.num_classes} classes"
    val = f"flat, labels {ds.val_labels}" if ds.val_labels else ds.val_split
    return f"{ds.source} {root} ({ds.train_split}/{val}, {classes})"


def cost_lines(sweep: SweepConfig, points: list[SweepPoint], cost: SweepCost) -> list[str]:
    """The cost plan: FLOPs and GPU-hours per stage and point, shared stages once, the total,
    and what pruning saves (sweep/cost.py says how each number is counted)."""
    first = points[0].config
    images, source = train_images(first)
    configured = cost.tflops_per_gpu == first.resources.tflops_per_gpu
    throughput = "resources.tflops_per_gpu" if configured else "measured by --calibrate"
    lines = [
        f"cost plan at {cost.tflops_per_gpu:.3g} TFLOP/s per GPU ({throughput}); "
        f"{images:,} training images ({source}):"
    ]
    rows = []
    for point in points:
        for c in cost.points[point.index]:
            rows.append(
                [
                    str(point.index),
                    c.stage,
                    c.key[:8],
                    f"{c.units:,} {c.unit}s",
                    fmt_flops(c.flops_per_unit),
                    fmt_flops(c.flops),
                    fmt_hours(cost.hours(c.flops)),
                ]
            )
    headers = ["#", "stage", "key", "length", "FLOPs/unit", "FLOPs", "GPU-hours"]
    lines.extend("  " + line for line in table(headers, rows).splitlines())
    by_stage = {stage: 0.0 for stage in STAGES}
    for c in cost.unique().values():
        by_stage[c.stage] += c.flops
    lines.append(
        "  per stage (shared once): "
        + ", ".join(f"{s} {fmt_hours(cost.hours(f))}" for s, f in by_stage.items() if f)
    )
    shared = cost.unshared_flops - cost.total_flops
    lines.append(
        f"  total: {fmt_hours(cost.hours(cost.total_flops))} ({fmt_flops(cost.total_flops)}); "
        f"sharing stages between points saves {fmt_hours(cost.hours(shared))}"
    )
    prune = sweep.search.prune
    keep = prune.kept(len(points)) if prune.enabled else ILLUSTRATIVE_KEEP
    if keep < len(points):
        pruned = cost.pruned_flops(keep)
        saved = cost.total_flops - pruned
        what = (
            f"search.prune (keep {keep} by {prune.proxy})"
            if prune.enabled
            else (f"search.prune: {{keep: {keep}}}")
        )
        lines.append(
            f"  with {what}: at least {fmt_hours(cost.hours(saved))} saved, "
            f"{fmt_hours(cost.hours(pruned))} spent (generators for {keep} of {len(points)} "
            + (
                "points)"
                if prune.enabled and not prune.keep_pareto
                else "points; points on the (reconstruction, proxy) Pareto set also train)"
            )
        )
    return lines


def planned_gpu_hours(sweep: SweepConfig, points: list[SweepPoint], cost: SweepCost) -> float:
    """What `--budget` is checked against: the total, or with `search.prune` the least it spends."""
    prune = sweep.search.prune
    if prune.enabled and prune.kept(len(points)) < len(points):
        return cost.hours(cost.pruned_flops(prune.kept(len(points))))
    return cost.hours(cost.total_flops)
