"""Pretrained weights for frozen networks: a local file as given, or `hub` = download once.

`hub` needs internet (a cluster usually has it; our CI machines do not, so tests use local files
and `random_init`). Downloads land in torch's hub cache and are reused.
"""

from __future__ import annotations

from pathlib import Path

# LPIPS v0.1 linear layers (the `vgg.pth` taming-transformers ships) and the torchvision VGG16
# ImageNet backbone they sit on.
LPIPS_LINEAR_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
)
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def download_once(url: str) -> Path:
    from torch.hub import download_url_to_file, get_dir

    target = Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(target))
    return target


def lpips_files(weights: str, backbone: str | None) -> tuple[str, str | None]:
    """(LPIPS weights, VGG16 backbone or None) for `workloads.vavae.LPIPS(weights, backbone)`."""
    if weights == "hub":
        return str(download_once(LPIPS_LINEAR_URL)), str(download_once(VGG16_URL))
    return weights, backbone


def inception_file(weights: str) -> Path:
    """The TF-ported Inception (`pt_inception-2015-12-05`) file; `hub` = torch-fidelity's copy."""
    if weights != "hub":
        return Path(weights).expanduser()
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return download_once(URL_INCEPTION_V3)
