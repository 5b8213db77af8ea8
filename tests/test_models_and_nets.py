"""Models and backbones: shapes for any image size, the loss terms, schedules, configs and their errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from vaelab.core.config import make_config
from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.base import LatentConfig
from vaelab.models.vae import VAEConfig
from vaelab.nn import BackboneConfig, resolve_backbone
from vaelab.probability.likelihoods import BernoulliLikelihood, GaussianLikelihood

SHAPES = [(1, 28, 28), (1, 32, 32), (1, 64, 64), (1, 7, 9), (3, 32, 32)]
SMALL = {"latent_dim": 3, "hidden": (16,), "channels": (4, 8)}  # small nets: shape tests need no capacity


# --- backbones: shapes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("backbone", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["vae", "ae"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_decode_encode_round_trips_the_data_shape(shape, name, backbone, likelihood):
    torch.manual_seed(0)
    model = build_model(name, shape, backbone=backbone, likelihood=likelihood, **SMALL)
    batch = 2
    x = torch.rand(batch, *shape)
    with torch.no_grad():
        code = model.encode(x)
        z = code.rsample() if name == "vae" else code
        assert z.shape == (batch, 3)
        px = model.decode(z)
        assert px.batch_shape == (batch,) and px.event_shape == shape
        assert px.mean.shape == (batch, *shape)
        assert px.log_prob(x).shape == (batch,)
        assert model.reconstruct(x).shape == (batch, *shape)
        assert model.code(x).shape == (batch, 3)

        # leading sample dimensions become the batch shape: (K, B, D) -> p(x|z) of batch shape (K, B)
        zk = torch.randn(5, batch, 3)
        pxk = model.decode(zk)
        assert pxk.batch_shape == (5, batch) and pxk.mean.shape == (5, batch, *shape)
        assert pxk.log_prob(x).shape == (5, batch)
        # and each slice is what decoding that slice alone gives
        torch.testing.assert_close(pxk.mean[3], model.decode(zk[3]).mean, atol=1e-5, rtol=1e-5)
        if name == "vae":
            assert model.sample(4).shape == (4, *shape)


def test_backbone_choice():
    cfg = BackboneConfig()
    assert resolve_backbone(cfg, (1, 28, 28)) == "mlp"
    assert resolve_backbone(cfg, (64,)) == "mlp"
    assert resolve_backbone(cfg, (3, 32, 32)) == "conv"
    assert resolve_backbone(cfg, (1, 64, 64)) == "conv"
    assert resolve_backbone(BackboneConfig(backbone="mlp"), (3, 32, 32)) == "mlp"
    model = build_model("vae", (1, 64, 64), **SMALL)
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.encoder.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder.modules())


def test_vector_data_with_the_mlp():
    torch.manual_seed(0)
    model = build_model("vae", (10,), latent_dim=2, hidden=(8, 8))
    x = torch.rand(4, 10)
    assert model.decode(model.encode(x).rsample()).mean.shape == (4, 10)
    assert model.decode(torch.randn(6, 4, 2)).batch_shape == (6, 4)


@pytest.mark.parametrize("name", ["vae", "ae"])
def test_image_too_small_for_the_conv_stack(name):
    with pytest.raises(VaelabError, match="8x8") as err:
        build_model(name, (1, 8, 8), backbone="conv", channels=(32, 64, 128, 256), latent_dim=2)
    assert "backbone=mlp" in str(err.value)
    assert "16x16" in str(err.value)  # what the stack would need
    build_model(name, (1, 16, 16), backbone="conv", channels=(4, 4, 4, 4), latent_dim=2)  # just fits
    with pytest.raises(VaelabError, match="backbone=mlp"):
        build_model(name, (1, 8, 8), backbone="conv", channels="4,4,4,4", latent_dim=2)


@pytest.mark.parametrize("name", ["vae", "ae"])
def test_vector_data_refuses_the_conv_backbone(name):
    with pytest.raises(VaelabError, match="backbone=mlp") as err:
        build_model(name, (64,), backbone="conv", latent_dim=2)
    assert "(64,)" in str(err.value)


# --- the VAE loss --------------------------------------------------------------------------------------------------


def small_vae(**options):
    torch.manual_seed(0)
    return build_model("vae", (1, 8, 8), **{"latent_dim": 3, "hidden": (16,), **options})


def binary_batch(n=6, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).round()


def test_vae_loss_terms():
    model, x = small_vae(beta=2.5), binary_batch()
    torch.manual_seed(2)
    loss = model.loss(x)
    assert set(loss.terms) == {"reconstruction", "kl", "elbo"}
    rec, kl, elbo = (loss.terms[k] for k in ("reconstruction", "kl", "elbo"))
    assert all(t.shape == () for t in (loss.total, rec, kl, elbo))
    torch.testing.assert_close(elbo, -(rec + kl))
    torch.testing.assert_close(loss.total, rec + 2.5 * kl)
    assert loss.total.requires_grad

    # the same terms by hand, with the same draw of z: nats per data point, averaged over the batch
    q = model.encode(x)
    torch.testing.assert_close(kl, kl_divergence(q, model.prior()).mean())
    torch.manual_seed(2)
    z = model.encode(x).rsample((1,))
    torch.testing.assert_close(rec, -model.decode(z).log_prob(x).mean())
    assert rec > 0 and kl > 0


def test_vae_mc_samples_average_the_draws():
    x = binary_batch()
    model4 = small_vae(mc_samples=4)
    torch.manual_seed(3)
    rec = model4.loss(x).terms["reconstruction"]
    torch.manual_seed(3)
    z = model4.encode(x).rsample((4,))
    assert z.shape == (4, 6, 3)
    per_draw = -model4.decode(z).log_prob(x).mean(1)  # (L,)
    torch.testing.assert_close(rec, per_draw.mean())
    assert per_draw.std() > 0  # the four draws differ


@torch.no_grad()
def test_vae_mc_samples_shrink_the_variance():
    """Var of the reconstruction term over seeds falls like 1/L; with 200 seeds each, the sample variance is within
    ~20% of the truth (its relative SE is sqrt(2/199) = 0.1 for Gaussian-ish terms), so a 16x drop must exceed 6x."""
    x = binary_batch(n=2)
    variances = {}
    for samples in (1, 16):
        model = small_vae(mc_samples=samples)
        with torch.no_grad():  # spread q so the draws matter
            model.encoder.net[-1].bias[3:].fill_(2.0)
        values = []
        for seed in range(200):
            torch.manual_seed(seed)
            values.append(model.loss(x).terms["reconstruction"])
        variances[samples] = torch.stack(values).var().item()
    assert variances[1] > 0
    assert variances[16] < variances[1] / 6, variances


def test_kl_warmup():
    model, x = small_vae(beta=2.0, kl_warmup_steps=100), binary_batch()
    assert model.kl_weight(None) == 2.0  # evaluation: the full weight
    for step, weight in ((0, 0.0), (25, 0.5), (50, 1.0), (100, 2.0), (500, 2.0)):
        assert model.kl_weight(step) == pytest.approx(weight)
        torch.manual_seed(4)
        loss = model.loss(x, step=step)
        torch.testing.assert_close(loss.total, loss.terms["reconstruction"] + weight * loss.terms["kl"])
    assert small_vae(beta=3.0).kl_weight(7) == 3.0  # no warm-up


# --- the plain autoencoder -------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_ae_loss_is_reconstruction_only(likelihood):
    torch.manual_seed(0)
    model = build_model("ae", (1, 8, 8), latent_dim=3, hidden=(16,), likelihood=likelihood)
    x = binary_batch()
    loss = model.loss(x)
    assert set(loss.terms) == {"reconstruction"}
    torch.testing.assert_close(loss.total, loss.terms["reconstruction"])
    torch.testing.assert_close(loss.total, -model.decode(model.encode(x)).log_prob(x).mean())
    torch.testing.assert_close(model.loss(x).total, loss.total)  # deterministic
    if likelihood == "gaussian":  # squared error / 2 + constant, per data point
        sq = ((x - model.reconstruct(x)) ** 2).flatten(1).sum(1).mean()
        torch.testing.assert_close(loss.total, 0.5 * sq + 32 * math.log(2 * math.pi))


def test_ae_is_not_generative():
    model = build_model("ae", (1, 8, 8), latent_dim=3, hidden=(16,))
    assert not model.generative
    with pytest.raises(VaelabError, match="not a generative model"):
        model.sample(3)


# --- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"latnet_dim": 4}, ["latnet_dim", "latent_dim"]),  # unknown key: named, and the valid keys listed
        ({"latent_dim": "abc"}, ["latent_dim", "integer"]),
        ({"latent_dim": "1.5"}, ["latent_dim", "integer"]),
        ({"latent_dim": 1.5}, ["latent_dim", "integer"]),
        ({"mc_samples": "two"}, ["mc_samples"]),
        ({"beta": "abc"}, ["beta", "number"]),
        ({"hidden": "200,abc"}, ["hidden"]),
        ({"activation": "swish"}, ["swish", "relu", "tanh"]),
        ({"likelihood": "poisson"}, ["poisson", "bernoulli", "gaussian"]),
        ({"backbone": "transformer"}, ["transformer", "mlp", "conv"]),
        ({"posterior": "flow"}, ["flow", "diagonal"]),
        ({"beta": 0}, ["beta"]),
        ({"beta": "-1"}, ["beta"]),
        ({"mc_samples": 0}, ["mc_samples"]),
        ({"latent_dim": 0}, ["latent_dim"]),
        ({"latent_dim": "-3"}, ["latent_dim"]),
        ({"kl_warmup_steps": -1}, ["kl_warmup_steps"]),
        ({"sigma": 0}, ["sigma"]),
        ({"hidden": "0"}, ["hidden"]),
    ],
)
def test_bad_config_values(values, words):
    for build in (lambda: make_config(VAEConfig, values), lambda: build_model("vae", (1, 8, 8), **values)):
        with pytest.raises(VaelabError) as err:
            build()
        for word in words:
            assert word in str(err.value), (values, str(err.value))


def test_ae_config_refuses_vae_keys():
    with pytest.raises(VaelabError, match="beta"):
        build_model("ae", (1, 8, 8), beta=2.0)
    with pytest.raises(VaelabError, match="unknown model 'vea'"):
        build_model("vea", (1, 8, 8))


def test_config_parsing_from_strings():
    cfg = make_config(
        VAEConfig,
        {"hidden": "200,200", "channels": "16, 32", "latent_dim": "8", "beta": "0.5", "mc_samples": "3"},
    )
    assert cfg.hidden == (200, 200) and cfg.channels == (16, 32)
    assert cfg.latent_dim == 8 and isinstance(cfg.latent_dim, int)
    assert cfg.beta == 0.5 and cfg.mc_samples == 3
    assert make_config(LatentConfig, {"hidden": "64"}).hidden == (64,)
    assert make_config(LatentConfig, {"hidden": [32, 16], "latent_dim": 2.0}).hidden == (32, 16)
    model = build_model("vae", (1, 8, 8), hidden="200,200", latent_dim="2")
    widths = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [200, 200, 4]  # two hidden layers, then mu and the raw scale of a 2-d latent


# --- likelihood data checks ------------------------------------------------------------------------------------


def test_bernoulli_refuses_data_outside_unit_interval():
    lik = BernoulliLikelihood((1, 4, 4))
    lik.check_data(torch.rand(3, 1, 4, 4))  # fine
    for bad in (torch.full((3, 1, 4, 4), 255.0), torch.full((3, 1, 4, 4), -0.5)):
        with pytest.raises(VaelabError, match="gaussian") as err:
            lik.check_data(bad)
        assert "bernoulli" in str(err.value)
    GaussianLikelihood((1, 4, 4)).check_data(torch.full((3, 1, 4, 4), 255.0))  # any real data is fine
    model = build_model("vae", (1, 4, 4), latent_dim=2, hidden=(8,))
    with pytest.raises(VaelabError, match="likelihood=gaussian"):
        model.likelihood.check_data(torch.full((2, 1, 4, 4), 2.0))
