"""FactorVAE: the density-ratio trick against a closed-form total correlation, gradients kept apart in one backward
pass, the discriminator's own parameter group honoured by the trainer and its checkpoint, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.factor_vae import discriminator, permute_dims
from vaelab.presets import get_preset
from vaelab.runs import load_checkpoint

SHAPE = (1, 6, 6)
SMALL = {"hidden": (16,), "latent_dim": 3, "discriminator_hidden": (32, 32)}


def test_permute_dims_shuffles_each_unit_on_its_own():
    z = torch.arange(40.0).view(10, 4) + 100 * torch.arange(4.0)
    p = permute_dims(z, torch.Generator().manual_seed(0))
    for j in range(4):
        assert sorted(p[:, j].tolist()) == sorted(z[:, j].tolist())  # a permutation of its own column
    assert not all(torch.equal(p[:, j].argsort(), p[:, 0].argsort()) for j in range(1, 4))  # not one shared order


def test_density_ratio_estimate_of_a_gaussian_total_correlation():
    """For z ~ N(0, [[1, r], [r, 1]]) TC = KL(q(z) || q(z1) q(z2)) = -log(1 - r^2) / 2; a discriminator trained to
    tell z from its permuted copies estimates it as the mean logit difference (Kim & Mnih 2018, section 3)."""
    torch.manual_seed(0)
    r = 0.8
    exact = -0.5 * math.log(1 - r**2)  # 0.51 nats
    d = discriminator(2, (64, 64))
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    chol = torch.tensor([[1.0, 0.0], [r, math.sqrt(1 - r**2)]])
    for _ in range(1500):
        z = torch.randn(512, 2) @ chol.T
        logits = d(torch.cat([z, permute_dims(z)]))
        labels = torch.cat([torch.zeros(512), torch.ones(512)]).long()
        opt.zero_grad()
        F.cross_entropy(logits, labels).backward()
        opt.step()
    with torch.no_grad():
        z = torch.randn(50_000, 2) @ chol.T
        logits = d(z)
        estimate = float((logits[:, 0] - logits[:, 1]).mean())
    assert estimate == pytest.approx(exact, abs=0.08)


def test_one_backward_pass_keeps_the_two_objectives_apart():
    torch.manual_seed(1)
    model = build_model("factor-vae", SHAPE, gamma=10.0, **SMALL)
    x = torch.rand(16, *SHAPE).bernoulli()
    loss = model.loss(x, step=0)
    disc = list(model.discriminator.parameters())
    vae = [p for p in model.parameters() if all(p is not q for q in disc)]
    total_disc = torch.autograd.grad(loss.total, disc, retain_graph=True)
    only_disc = torch.autograd.grad(loss.terms["discriminator"], disc, retain_graph=True)
    for a, b in zip(total_disc, only_disc):
        torch.testing.assert_close(a, b)  # the gamma TC term does not train the discriminator
    from_disc = torch.autograd.grad(loss.terms["discriminator"], vae, retain_graph=True, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in from_disc)  # the discriminator loss does not train the VAE
    tc_grads = torch.autograd.grad(loss.terms["tc"], vae, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in tc_grads)  # but the TC term does
    by_hand = loss.terms["reconstruction"] + loss.terms["kl"] + 10.0 * loss.terms["tc"] + loss.terms["discriminator"]
    torch.testing.assert_close(loss.total, by_hand)
    assert float(loss.terms["elbo"]) == pytest.approx(-float(loss.terms["reconstruction"] + loss.terms["kl"]))


def test_the_trainer_honours_the_parameter_groups_and_resumes_exactly(tmp_path):
    options = dict(epochs=2, batch_size=100, lr=1e-3, discriminator_lr=2e-4, discriminator_betas=(0.4, 0.8), **SMALL)
    options["hidden"] = (32,)
    run = vaelab.train("factor-vae", "digits", tmp_path / "a", **options)
    state = load_checkpoint(run.path / "checkpoint.pt")
    groups = state["optimizer"]["param_groups"]
    assert [(g["lr"], tuple(g["betas"])) for g in groups] == [(1e-3, (0.9, 0.999)), (2e-4, (0.4, 0.8))]
    n_disc = len(list(run.model.discriminator.parameters()))
    assert len(groups[1]["params"]) == n_disc

    vaelab.train("factor-vae", "digits", tmp_path / "b", **{**options, "epochs": 1})
    vaelab.resume(tmp_path / "b", epochs=2)
    resumed = vaelab.load(tmp_path / "b")
    for k, v in run.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    val = [r for r in run.metrics() if r["split"] == "val"][-1]
    assert {"tc", "discriminator", "elbo"} <= set(val)


def test_preset_on_dsprites_small():
    preset = get_preset("factor-vae-dsprites-small")
    assert preset.model == "factor-vae" and preset.data == "dsprites-small"
    config = vaelab.make_run_config(preset.model, preset.data, dict(preset.options))
    assert config.model_config.gamma == 35.0 and config.model_config.discriminator_lr == 1e-4
    assert tuple(config.model_config.discriminator_betas) == (0.5, 0.9)


def test_bad_input():
    with pytest.raises(VaelabError, match=r"gamma \(γ, the weight of the total correlation\) must be >= 0, got -1"):
        build_model("factor-vae", SHAPE, gamma=-1)
    with pytest.raises(VaelabError, match="discriminator_betas must be two numbers in"):
        build_model("factor-vae", SHAPE, discriminator_betas=(0.5,))
    with pytest.raises(VaelabError, match="discriminator_lr must be > 0"):
        build_model("factor-vae", SHAPE, discriminator_lr=0)
