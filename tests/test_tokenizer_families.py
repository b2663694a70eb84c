"""Tokenizer families (`tokenizer.family`): EQ-VAE's transform, l-DeTok's noise and masks, the
decoder-only stage, and the registry's config checks. Tiny real models, no mocks, seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workloads.families import FAMILIES, get_family
from workloads.families.detok import GAMMA, mask_patches, noised_latent
from workloads.families.eqvae import equivariance_transform, latent_sizes
from workloads.vavae import VAVAEObjective, build_vavae


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vavae():
    torch.manual_seed(0)
    # f4 (ch_mult 1, 2, 2) on 64 px images: 16x16 latents, so EQ-VAE has real scales to draw.
    return build_vavae("tiny", vf_feature_dim=None, disc_ndf=8, disc_layers=2)


def test_registry_holds_each_family_once():
    assert {"vavae", "eqvae", "detok"} <= set(FAMILIES)
    assert all(FAMILIES[name].name == name for name in FAMILIES)
    with pytest.raises(KeyError, match="unknown tokenizer family 'sdvae'"):
        get_family("sdvae")


@pytest.mark.parametrize("angle", [1, 2, 3])
def test_eq_transform_is_applied_identically_to_latent_and_image(angle):
    factor, size = 4, 16
    x = torch.zeros(1, 3, size * factor, size * factor)
    x[..., :8, :20] = 1.0  # a marker in the top-left corner, not symmetric under rotation
    z = F.avg_pool2d(x, factor)  # a latent that is the image's block means
    # At full size the transform commutes with the block means exactly ...
    torch.testing.assert_close(
        F.avg_pool2d(equivariance_transform(x, size * factor, angle), factor),
        equivariance_transform(z, size, angle),
    )
    # ... and downscaled, latent and image land the marker in the same place at matching sizes.
    for n in latent_sizes(size, factor)[::5]:
        image, latent = (
            equivariance_transform(x, n * factor, angle),
            equivariance_transform(z, n, angle),
        )
        assert image.shape[-1] == latent.shape[-1] * factor
        where = F.avg_pool2d(image, factor)[0, 0] > 0.5
        assert torch.equal(where, latent[0, 0] > 0.5)
    # The reference's scales k/32, k in 8..31, for a 16-wide latent; images under 32 px dropped.
    assert latent_sizes(16, 4) == [n for n in (16 * k // 32 for k in range(8, 32)) if n >= 8]


def test_eqvae_view_scores_the_reconstruction_against_the_transformed_image():
    model, family = tiny_vavae(), get_family("eqvae")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    seen = set()
    with torch.no_grad():
        for seed in range(12):
            view = family.training_view(model, x, torch.Generator().manual_seed(seed))
            assert view.reconstruction.shape == view.target.shape
            if view.target.shape[-1] < 64:
                seen.add("low_res" if view.image.shape == view.target.shape else "equivariant")
            elif not torch.equal(view.target, x):
                seen.add("equivariant")  # a full-size scale (31/32 floors to 15 of 16: no)
            else:
                seen.add("prior")
    assert {"equivariant", "prior"} <= seen


def test_detok_noise_formula_and_masks():
    z, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    tau = torch.tensor([0.0, 0.5, 1.0])
    out = noised_latent(z, tau, eps)
    torch.testing.assert_close(out[0], z[0])
    torch.testing.assert_close(out[1], 0.5 * z[1] + 0.5 * GAMMA * eps[1])
    torch.testing.assert_close(out[2], GAMMA * eps[2])
    assert GAMMA == 3.0
    x = torch.ones(2, 3, 16, 16)
    masked = mask_patches(x, 0.5, 4, torch.Generator().manual_seed(0))
    cells = masked[:, 0].unfold(1, 4, 4).unfold(2, 4, 4)  # (B, 4, 4, 4, 4) blocks
    zero = (cells == 0).all(-1).all(-1)
    assert ((cells == 0).any(-1).any(-1) == zero).all()  # whole f x f blocks only
    assert zero.sum(dim=(1, 2)).tolist() == [8, 8]  # 16 - ceil(16 * 0.5) per sample
    assert torch.equal(mask_patches(x, 0.0, 4, None), x)


def test_detok_trains_on_noised_latents_and_the_decoder_stage_sees_none():
    model, family = tiny_vavae(), get_family("detok")
    model.eval()  # no dropout; the family decides the noise
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        clean = model.decode(model.encode(x).sample(torch.Generator().manual_seed(1)))
        noisy = family.training_view(model, x, torch.Generator().manual_seed(1)).reconstruction
        fine_tune = family.view(model, x, torch.Generator().manual_seed(1), decoder_only=True)
    assert not torch.allclose(noisy, clean)
    torch.testing.assert_close(fine_tune.reconstruction, clean)


def test_decoder_only_stage_freezes_the_encoder():
    model = tiny_vavae()
    model.freeze_encoder()
    objective = VAVAEObjective(
        None,
        None,
        use_vf=False,
        perceptual_weight=0.0,
        disc_start=0,
        family=get_family("detok"),
        decoder_only=True,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.generator_parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable + list(model.discriminator_parameters()), lr=1e-2)
    loss, _ = objective(model, torch.rand(2, 3, 32, 32) * 2 - 1, 1, torch.Generator())
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        frozen = key.startswith(("encoder.", "quant_conv."))
        if frozen:
            assert not changed, key
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("encoder."))


def test_config_checks_family_and_decoder_stage():
    from orchestrator.config import ConfigError
    from orchestrator.config.space import build_config
    from orchestrator.train.plan import tokenizer_stages
    from search_spaces import load_space

    with pytest.raises(ConfigError, match=r"tokenizer\.family: unknown family 'eqave'.*eqvae"):
        build_config(load_space("smoke"), {"tokenizer.family": "eqave"})
    with pytest.raises(ConfigError, match=r"tokenizer\.vf\.foundation: repae aligns the DiT"):
        build_config(
            load_space("smoke"), {"tokenizer.family": "repae", "tokenizer.vf.foundation": "none"}
        )
    with pytest.raises(ConfigError, match=r"tokenizer\.stages\[0\]\.train: `decoder` freezes"):
        build_config(
            load_space("smoke"),
            {"tokenizer.stages": [{"name": "ft", "steps": 2, "train": "decoder"}]},
        )
    stages = [{"name": "main", "steps": 4}, {"name": "decoder", "steps": 2, "train": "decoder"}]
    cfg = build_config(
        load_space("smoke"), {"tokenizer.family": "detok", "tokenizer.stages": stages}
    )
    plans = tokenizer_stages(cfg, steps_per_epoch=1)
    assert [plan.overrides for plan in plans] == [{}, {"train": "decoder"}]


def test_rae_config_checks():
    from orchestrator.config import ConfigError, stage_keys
    from orchestrator.config.space import build_config
    from search_spaces import load_space

    decoder = {"patch_size": 2, "width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}
    rae = {
        "tokenizer.family": "rae",
        "tokenizer.vf.foundation": "standin",
        "tokenizer.arch.embed_dim": 96,
        "tokenizer.decoder": decoder,
    }
    cfg = build_config(load_space("smoke"), rae)
    assert cfg.tokenizer.downsample_factor == 2 and cfg.generator.model.in_channels == 96
    # On the fly is a new cache (statistics only); cached keeps every existing key.
    otf = build_config(load_space("smoke"), {**rae, "cache.mode": "on_the_fly"})
    assert stage_keys(otf).cache != stage_keys(cfg).cache
    assert stage_keys(otf).tokenizer == stage_keys(cfg).tokenizer
    refused = [
        (
            {**rae, "tokenizer.vf.proj_fix": True},
            r"tokenizer\.vf\.proj_fix: asks the VF loss of rae",
        ),
        (
            {**rae, "tokenizer.stages": [{"name": "a", "steps": 2, "vf_weight": 0.5}]},
            r"tokenizer\.stages\[0\]\.vf_weight: asks the VF loss of rae, whose encoder is frozen",
        ),
        ({**rae, "tokenizer.vf.foundation": "none"}, r"tokenizer\.vf\.foundation: names rae's"),
        (
            {**rae, "tokenizer.vf.foundation": "vit_base_patch14_reg4_dinov2.lvd142m"},
            r"tokenizer\.arch\.embed_dim: is 96, but rae's encoder vit_base_patch14_reg4_dinov2"
            r"\.lvd142m gives 768-channel tokens",
        ),
        ({**rae, "tokenizer.decoder": None}, r"tokenizer\.decoder: family rae needs its ViT"),
        ({"tokenizer.decoder": decoder}, r"tokenizer\.decoder: is RAE's ViT decoder"),
        (
            {**rae, "tokenizer.init_from": "x.safetensors"},
            r"tokenizer\.init_from: is not supported",
        ),
        (
            {"tokenizer.family": "eqvae", "cache.mode": "on_the_fly"},
            r"cache\.mode: on_the_fly runs the tokenizer's encoder in the generator's workers, "
            r"but eqvae's encoder is trained, not frozen",
        ),
    ]
    for overrides, message in refused:
        with pytest.raises(ConfigError, match=message):
            build_config(load_space("smoke"), overrides)


def test_init_from_with_other_latent_channels_is_refused(tmp_path):
    from safetensors.torch import save_file

    from orchestrator.config import ConfigError
    from orchestrator.config.space import build_config
    from orchestrator.storage.models import tokenizer_spec
    from orchestrator.storage.pretrained import check_inputs
    from search_spaces import load_space

    cfg = build_config(load_space("smoke"), {"tokenizer.arch.embed_dim": 8})
    weights = tmp_path / "d8.safetensors"
    save_file(tokenizer_spec(cfg).build().state_dict(), str(weights))
    other = build_config(
        load_space("smoke"), {"tokenizer.arch.embed_dim": 4, "tokenizer.init_from": str(weights)}
    )
    with pytest.raises(
        ConfigError,
        match=r"tokenizer\.init_from: .* makes 8-channel latents but "
        r"tokenizer\.arch\.embed_dim is 4",
    ):
        check_inputs([other])


def test_successors_space_plans_one_tokenizer_per_family_and_keeps_old_keys():
    from orchestrator.config.space import expand
    from search_spaces import load_space

    points = expand(load_space("successors"))
    families = [p.config.tokenizer.family for p in points]
    assert families == ["vavae", "vavae", "eqvae", "detok", "repae", "rae"]
    assert len({p.keys.tokenizer for p in points}) == len(points)
    assert len({p.config.generator.model.name for p in points}) == 1  # one generator protocol
    # RAE: DINOv2-B's 768x16x16 tokens, per-position statistics, the DDT head and its shift.
    rae = points[-1].config
    assert (rae.tokenizer.arch.embed_dim, rae.tokenizer.downsample_factor) == (768, 16)
    assert rae.generator.model.in_channels == 768 and rae.generator.model.head is not None
    assert rae.sampler.timestep_shift == pytest.approx((4096 / (768 * 16 * 16)) ** 0.5)
    # The default family adds nothing to a key: the LDM point is paper_table2's d32 baseline.
    table2 = {
        (p.config.tokenizer.arch.embed_dim, p.config.tokenizer.vf.foundation): p.keys.tokenizer
        for p in expand(load_space("paper_table2"))
    }
    assert points[0].keys.tokenizer == table2[(32, "none")]
    assert points[1].keys.tokenizer == table2[(32, "dinov2")]


def repae_setup():
    from workloads.dit import LightningDiT_models
    from workloads.families.repae import REPAEModules

    model = tiny_vavae()
    dit = LightningDiT_models["LightningDiT-Micro/1"](input_size=8, in_channels=8, num_classes=3)
    for block in dit.blocks:  # adaLN-Zero starts every branch at 0: give gradients a path
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    torch.nn.init.normal_(dit.final_layer.linear.weight, std=0.02)
    extra = REPAEModules(dit, feature_dim=16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = model.encode(x).sample(torch.Generator().manual_seed(0))
    t, noise = torch.rand(2), torch.randn_like(z)
    features, labels = torch.randn(2, 16, 8, 8), torch.tensor([0, 2])
    return model, extra, (z, t, noise, labels, features)


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def test_repae_routes_each_loss_to_its_own_network():
    from workloads.families.repae import VAE_ALIGN_WEIGHT, dit_losses, vae_alignment

    # The VAE step (REPA through the frozen DiT) trains the VAE only.
    model, extra, (z, t, noise, labels, features) = repae_setup()
    vae_alignment(extra, z, t, noise, labels, features).backward()
    assert all(g is None for g in grads(extra).values())
    assert grads(model)["encoder.conv_out.weight"].abs().sum() > 0
    # The DiT step (velocity + REPA on z.detach()) trains the DiT and projector only.
    model, extra, (z, t, noise, labels, features) = repae_setup()
    mse, align = dit_losses(extra, z.detach(), t, noise, labels, features)
    (mse + align).backward()
    assert all(g is None for g in grads(model).values())
    assert grads(extra)["dit.blocks.0.attn.qkv.weight"].abs().sum() > 0
    assert grads(extra)["projector.0.weight"].abs().sum() > 0
    # Summed (the one-backward form), each network gets exactly its own step's gradient.
    model, extra, (z, t, noise, labels, features) = repae_setup()
    (VAE_ALIGN_WEIGHT * vae_alignment(extra, z, t, noise, labels, features)).backward()
    alone = {n: g.clone() for n, g in grads(model).items() if g is not None}
    model, extra, (z, t, noise, labels, features) = repae_setup()
    align_vae = vae_alignment(extra, z, t, noise, labels, features)
    mse, align = dit_losses(extra, z.detach(), t, noise, labels, features)
    (VAE_ALIGN_WEIGHT * align_vae + mse + 0.5 * align).backward()
    for name, grad in alone.items():
        torch.testing.assert_close(grads(model)[name], grad, msg=name)


def test_repae_batchnorm_statistics_are_exported():
    from workloads.families.repae import dit_losses

    _, extra, (z, t, noise, labels, features) = repae_setup()
    z = z.detach() * 3 + 1
    extra.normalize(z, update=False)  # the VAE step reads the running statistics only
    assert extra.bn.num_batches_tracked.item() == 0
    dit_losses(extra, z, t, noise, labels, features)  # the DiT step initialises and updates
    mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3))
    torch.testing.assert_close(extra.bn.running_mean, mean)
    torch.testing.assert_close(extra.bn.running_var, var)
    stats = extra.latent_stats()
    torch.testing.assert_close(torch.tensor(stats["mean"]), mean)
    torch.testing.assert_close(torch.tensor(stats["std"]), (var + extra.bn.eps).sqrt())
    dit_losses(extra, z + 1, t, noise, labels, features)
    torch.testing.assert_close(extra.bn.running_mean, mean + 0.1)  # momentum 0.1


def test_repae_stage_trains_three_groups_and_exports_an_ordinary_tokenizer():
    import numpy as np

    from orchestrator.config.space import build_config
    from orchestrator.train.plan import StagePlan, tokenizer_stages
    from orchestrator.train.tokenizer import TokenizerWorkload
    from search_spaces import load_space

    cfg = build_config(
        load_space("smoke"),
        {
            "tokenizer.family": "repae",
            "tokenizer.loss.disc_start": 0,
            "tokenizer.arch.embed_dim": 4,
        },
    )
    stages = tokenizer_stages(cfg, steps_per_epoch=1)
    assert stages == (StagePlan("main", stages[0].steps),)
    torch.manual_seed(0)
    workload = TokenizerWorkload(cfg, stages, {}, torch.device("cpu"))  # random-init stand-in
    bundle = workload.build(0, None)
    groups = {g["name"]: g for g in bundle.optimizer.param_groups}
    assert set(groups) == {"generator", "discriminator", "extra"}
    assert groups["extra"]["betas"] == (0.9, 0.999)
    batch = {
        "image": np.random.default_rng(0).uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32),
        "label": np.array([0, 1, 2, 3]),
    }
    loss, terms = workload.loss(bundle.model, batch, 0, 0, 0)
    loss.backward()
    assert {"repa_vae", "dit_mse", "repa_dit"} <= set(terms)
    files, _ = workload.export(bundle.model.state_dict())
    assert set(files) == {"model", "training_model", "latent_stats"}
    assert not any(key.startswith(("extra.", "dit.")) for key in files["model"])
    torch.testing.assert_close(files["latent_stats"]["mean"], bundle.model.extra.bn.running_mean)


def test_eqvae_composes_with_the_vf_loss_in_every_branch():
    from workloads.foundation import build_foundation

    torch.manual_seed(0)
    foundation = build_foundation(
        "vit_tiny_patch16_224",
        "random_init",
        timm_kwargs={"img_size": 64, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2},
    )
    model = build_vavae("tiny", vf_feature_dim=32, disc_ndf=8, disc_layers=2)
    objective = VAVAEObjective(
        None, foundation, perceptual_weight=0.0, disc_start=0, family=get_family("eqvae")
    )
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    seeds = {}  # branch -> a seed that takes it (the branch is the view's first draw)
    for seed in range(40):
        with torch.no_grad():
            view = objective.family.training_view(model, x, torch.Generator().manual_seed(seed))
        kind = "low_res" if view.image is not x else "full" if view.target is x else "equivariant"
        seeds.setdefault(kind, seed)
        if len(seeds) == 3:
            break
    assert set(seeds) == {"low_res", "full", "equivariant"}
    for kind, seed in seeds.items():
        model.zero_grad()
        loss, terms = objective(model, x, 1, torch.Generator().manual_seed(seed))
        loss.backward()
        assert torch.isfinite(loss) and terms["vf"] > 0, kind
        assert model.linear_proj.weight.grad.abs().sum() > 0, kind
