"""Honest metric names: a number is called FID only when a real Inception computed it, and every
count-dependent metric carries its sample count (`fid_10k`, `fd_proxy_500`; see
`workloads.metrics.names`). The names a config will report are known before anything runs, so
Optuna objectives, the chart's axes and `--dry-run` use exactly what MLflow and the CSV receive."""

from __future__ import annotations

from orchestrator.config import ExperimentConfig


def uses_inception(cfg: ExperimentConfig) -> bool:
    return cfg.evaluation.inception_weights is not None


def reports_lpips(cfg: ExperimentConfig) -> bool:
    """LPIPS is a metric only with real weights: `none` turns it off and `random_init` (tests)
    trains the perceptual term but is no perceptual distance."""
    return cfg.tokenizer.loss.lpips_weights not in ("none", "random_init")


def generation_metric_label(cfg: ExperimentConfig) -> str:
    """`FID-50K`, `FID-10K`, ... with Inception; `FD-proxy-500` on the embedded default."""
    from workloads.metrics.names import display_label, metric_name

    metric = "fid" if uses_inception(cfg) else "fd_proxy"
    return display_label(metric_name(metric, cfg.evaluation.num_samples))


def reported_metrics(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Final metrics every finished point of `cfg` reports, named as MLflow and the CSV get them,
    in the table's order: what an Optuna objective or a chart axis may name."""
    from workloads.metrics.names import METRICS, metric_name, precision_recall_count

    ev = cfg.evaluation
    n, images = ev.num_samples, ev.tokenizer_num_images
    pr = precision_recall_count(n)
    names = {"psnr": "psnr", "ssim": "ssim"}
    if uses_inception(cfg):
        counts = {"rfid": images, "fid": n, "sfid": n, "is": n, "precision": pr, "recall": pr}
    else:
        counts = {
            "rfd_proxy": images,
            "fd_proxy": n,
            "class_consistency": n,
            "precision_proxy": pr,
            "recall_proxy": pr,
        }
    names.update({base: metric_name(base, count) for base, count in counts.items()})
    if reports_lpips(cfg):
        names["lpips"] = "lpips"
    if fd_dinov2_enabled(cfg):
        names["rfd_dinov2"] = metric_name("rfd_dinov2", images)
    if ev.uniformity_samples and images > 90:
        names.update(density_cv="density_cv", gini="gini", norm_entropy="norm_entropy")
    names.update(latent_proxies(cfg))
    return tuple(names[base] for base in METRICS if base in names)


def latent_proxies(cfg: ExperimentConfig) -> dict[str, str]:
    """The gFID proxies the tokenizer evaluation computes (base -> reported name): iFID (or its
    FD-proxy twin) with a training-latent bank, LNC with more validation images than
    neighbours, LDS always (workloads/metrics/latent_proxies.py)."""
    from workloads.metrics.latent_proxies import LNC_MAX_LATENTS, LNC_NEIGHBOURS
    from workloads.metrics.names import metric_name

    ev = cfg.evaluation
    images = ev.tokenizer_num_images
    names = {"lds": "lds"}
    if ev.proxy_train_images:
        base = "ifid" if uses_inception(cfg) else "ifd_proxy"
        names[base] = metric_name(base, images)
    if images > LNC_NEIGHBOURS:
        names["lnc"] = metric_name("lnc", min(images, LNC_MAX_LATENTS))
    return names


def fd_dinov2_enabled(cfg: ExperimentConfig) -> bool:
    """FD_DINOv2 of reconstructions is reported when its weights are configured."""
    return cfg.evaluation.fd_dinov2_weights is not None


def resolve_metric(name: str, cfg: ExperimentConfig) -> str:
    """A reported name as given (`fid_10k`), or a base name (`fid`) resolved to the one `cfg`
    reports; ValueError naming the metric and the choices otherwise."""
    from workloads.metrics.names import is_known, parse_metric

    reported = reported_metrics(cfg)
    if name in reported:
        return name
    matches = [r for r in reported if parse_metric(r)[0] == name]
    if len(matches) == 1:
        return matches[0]
    if not is_known(name):
        raise ValueError(f"`{name}` is not a known metric; this config reports {list(reported)}")
    raise ValueError(f"`{name}` is not a metric this config reports; choose from {list(reported)}")


UNIFORMITY = ("density_cv", "gini", "norm_entropy")


def resolve_proxy(name: str, cfg: ExperimentConfig) -> str:
    """The reported name of a gFID proxy the tokenizer evaluation computes (`search.prune.proxy`,
    the correlation report): `ifid` names iFID's FD-proxy twin where there is no Inception;
    ValueError naming the choices otherwise."""
    if name == "ifid" and not uses_inception(cfg):
        name = "ifd_proxy"
    proxies = [
        *latent_proxies(cfg).values(),
        *(m for m in reported_metrics(cfg) if m in UNIFORMITY),
    ]
    name = resolve_metric(name, cfg)
    if name not in proxies:
        raise ValueError(
            f"`{name}` is not a proxy the tokenizer evaluation computes; choose from {proxies}"
        )
    return name
