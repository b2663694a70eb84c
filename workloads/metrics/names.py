"""The one table of metric names: display name, direction, and whether the name carries a count.

A metric whose value depends on how many samples produced it (every Fréchet distance, IS,
precision/recall, class consistency) is *named* with that count: ``fid_50k``, ``is_10k``,
``precision_10k``, ``fd_proxy_500``. The same name reaches MLflow, the frontier CSV, the chart
and ``--dry-run``, so an FID-10K can never be put in a column of FID-50Ks. Per-image means
(PSNR, SSIM, LPIPS, LDS) and the latent-space uniformity scores are named without one.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    display: str  # as papers print it
    lower_is_better: bool
    counted: bool  # the name ends in `_<count>` (`fid_50k`)


# Order = the frontier table's column order: reconstruction, generation, latent-space proxies.
METRICS: dict[str, MetricInfo] = {
    "rfid": MetricInfo("rFID", True, True),
    "rfd_proxy": MetricInfo("rFD-proxy", True, True),
    # Reconstruction FD in DINOv2 ViT-L/14 CLS space (FD_DINOv2 as dgm-eval / EDM2 compute it).
    "rfd_dinov2": MetricInfo("rFD_DINOv2", True, True),
    "psnr": MetricInfo("PSNR (dB)", False, False),
    "ssim": MetricInfo("SSIM", False, False),
    "lpips": MetricInfo("LPIPS", True, False),
    "fid": MetricInfo("FID", True, True),
    "fd_proxy": MetricInfo("FD-proxy", True, True),
    "sfid": MetricInfo("sFID", True, True),
    "is": MetricInfo("IS", False, True),
    "precision": MetricInfo("Precision", False, True),
    "recall": MetricInfo("Recall", False, True),
    "class_consistency": MetricInfo("ClassConsistency", False, True),
    "precision_proxy": MetricInfo("Precision-proxy", False, True),
    "recall_proxy": MetricInfo("Recall-proxy", False, True),
    "density_cv": MetricInfo("density CV", True, False),
    "gini": MetricInfo("Gini", True, False),
    "norm_entropy": MetricInfo("normalised entropy", False, False),
    # gFID proxies of the tokenizer evaluation (workloads/metrics/latent_proxies.py): iFID (its
    # FD-proxy twin without Inception), latent label agreement, spatial self-similarity.
    "ifid": MetricInfo("iFID", True, True),
    "ifd_proxy": MetricInfo("iFD-proxy", True, True),
    "lnc": MetricInfo("LNC", False, True),
    "lds": MetricInfo("LDS", False, False),
    # The first ASHA round's `fd_intermediate` (on `evaluation.intermediate_samples` samples of a
    # short generator run): the cheap generation proxy the reference's authors recommend
    # (hustvl/LightningDiT issue 74), carried into the point's final metrics.
    "fd_first_round": MetricInfo("FD at the first round", True, False),
}

# ADM compares 10K reference images with the samples for precision/recall; we use (at most) 10K
# samples as well. The count is part of the names, hence here (torch-free, for the config).
PR_IMAGES = 10_000


def precision_recall_count(num_samples: int) -> int:
    """Samples (and reference images) precision/recall compares: 10K, or all when fewer."""
    return min(num_samples, PR_IMAGES)


_COUNTED = re.compile(r"^(?P<base>[a-z0-9_]+?)_(?P<count>\d+)(?P<k>k?)$")


def count_tag(count: int) -> str:
    """``50_000 -> "50k"``, ``500 -> "500"``, ``12_345 -> "12345"``: exact, never rounded."""
    if count < 1:
        raise ValueError(f"a sample count must be positive, got {count}")
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def metric_name(base: str, count: int) -> str:
    """The reported name of `base` measured on `count` samples (``fid``, 10_000 -> ``fid_10k``)."""
    if base not in METRICS:
        raise KeyError(f"unknown metric {base!r}; known: {sorted(METRICS)}")
    return f"{base}_{count_tag(count)}" if METRICS[base].counted else base


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"fid_10k" -> ("fid", 10_000)``, ``"psnr" -> ("psnr", None)``; KeyError if unknown."""
    if name in METRICS and not METRICS[name].counted:
        return name, None
    match = _COUNTED.match(name)
    if match and match["base"] in METRICS and METRICS[match["base"]].counted:
        return match["base"], int(match["count"]) * (1000 if match["k"] else 1)
    raise KeyError(name)


def is_known(name: str) -> bool:
    """A base name of the table (`fid`) or a reported name (`fid_10k`, `psnr`)."""
    if name in METRICS:
        return True
    try:
        parse_metric(name)
    except KeyError:
        return False
    return True


def lower_is_better(name: str) -> bool:
    """Direction of a base or reported name; an unknown metric is an error, never a guess."""
    base = name if name in METRICS else parse_metric(name)[0]
    return METRICS[base].lower_is_better


def display_label(name: str) -> str:
    """``"fid_10k" -> "FID-10K"``, ``"fd_proxy_500" -> "FD-proxy-500"``, ``"psnr" -> "PSNR (dB)"``."""
    base, count = (name, None) if name in METRICS else parse_metric(name)
    text = METRICS[base].display
    return text if count is None else f"{text}-{count_tag(count).upper()}"


def axis_label(name: str) -> str:
    """``"fid_10k" -> "FID-10K (lower is better)"``: what is plotted and which way is better."""
    better = "lower" if lower_is_better(name) else "higher"
    return f"{display_label(name)} ({better} is better)"
