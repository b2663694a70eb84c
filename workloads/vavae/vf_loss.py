"""Vision-foundation (VF) alignment loss of VA-VAE: marginal cosine (mcos) + marginal
distance-matrix (mdms) similarity, and its adaptive weight (paper Eq. 1-5;
``vavae/ldm/modules/losses/contperceptual.py``)."""

import torch
import torch.nn.functional as F

# Added to the VF gradient norm so the ratio stays finite when VF has no gradient.
ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e8


def vf_loss(
    z_proj: torch.Tensor,
    feats: torch.Tensor,
    cos_margin: float,
    distmat_margin: float,
    cos_weight: float = 1.0,
    distmat_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """VF loss between the projected latent ``z_proj`` and frozen features ``feats``.

    Both are (B, C, h, w) on the same grid. Returns scalar tensors ``mcos``, ``mdms`` and
    ``vf = distmat_weight * mdms + cos_weight * mcos``.
    """
    if z_proj.shape != feats.shape:
        raise ValueError(
            f"projected latent {tuple(z_proj.shape)} and foundation features "
            f"{tuple(feats.shape)} must have the same (B, C, h, w) shape"
        )
    # Cosines and their differences are compared against margins of ~0.25: keep them in fp32
    # even under bf16 autocast or bf16 weights (the reference trains in fp32).
    with torch.autocast(z_proj.device.type, enabled=False):
        z_proj, feats = z_proj.float(), feats.float()
        b, c = z_proj.shape[:2]
        z_unit = F.normalize(z_proj.reshape(b, c, -1), dim=1)
        f_unit = F.normalize(feats.reshape(b, c, -1), dim=1)
        # Per-image N x N cosine-similarity (Gram) matrices over the h*w positions.
        gram_z = torch.einsum("bci,bcj->bij", z_unit, z_unit)
        gram_f = torch.einsum("bci,bcj->bij", f_unit, f_unit)
        # The mean runs over all B*N*N entries, diagonal included (as the reference does), so
        # the always-equal diagonal dilutes the loss by (N-1)/N.
        mdms = F.relu((gram_z - gram_f).abs() - distmat_margin).mean()
        # Argument order (feats, z_proj) as in the reference call.
        cosine = F.cosine_similarity(feats, z_proj, dim=1)
        mcos = F.relu(1.0 - cos_margin - cosine).mean()
    return {"mcos": mcos, "mdms": mdms, "vf": distmat_weight * mdms + cos_weight * mcos}


def adaptive_vf_weight(
    nll: torch.Tensor, vf: torch.Tensor, last_layer_weight: torch.Tensor, vf_weight: float
) -> torch.Tensor:
    """clamp(||d nll/dW|| / (||d vf/dW|| + 1e-4), 0, 1e8) * vf_weight, detached.

    ``last_layer_weight`` is the encoder's output conv weight (``encoder.conv_out.weight``), not
    the decoder's: the VF term acts on the encoder, and nll is a sum over pixels while vf is a
    mean, so the ratio rescales vf to a gradient magnitude comparable with reconstruction.
    """
    nll_grad = torch.autograd.grad(nll, last_layer_weight, retain_graph=True)[0]
    vf_grad = torch.autograd.grad(vf, last_layer_weight, retain_graph=True)[0]
    ratio = torch.norm(nll_grad) / (torch.norm(vf_grad) + ADAPTIVE_EPS)
    return torch.clamp(ratio, 0.0, ADAPTIVE_MAX).detach() * vf_weight
