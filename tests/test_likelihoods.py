"""Decoder likelihoods against their written densities: learned and per-pixel Gaussian sigma, continuous Bernoulli.

Densities are recomputed by hand in float64; the learned sigma's gradient is checked against its derivative written
out, and the continuous Bernoulli's normalizer and mean against numerical integration over [0, 1].
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.probability import LIKELIHOODS
from vaelab.probability.likelihoods import (
    ContinuousBernoulliLikelihood,
    LearnedSigmaGaussian,
    PixelSigmaGaussian,
)

LOG_2PI = math.log(2 * math.pi)
SHAPES = [(1, 8, 8), (3, 4, 5), (10,)]


def gaussian_by_hand(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sum_d -(x - m)^2 / 2 s^2 - log s - log(2 pi) / 2, per data point, in float64."""
    x, mean, sigma = x.double(), mean.double(), sigma.double().expand_as(mean)
    per_dim = -0.5 * ((x - mean) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI
    return per_dim.flatten(1).sum(1)


# --- one learned sigma ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_learned_sigma_log_prob_and_its_gradient(shape):
    g = torch.Generator().manual_seed(0)
    batch, d = 6, math.prod(shape)
    mean, x = torch.randn(batch, *shape, generator=g), torch.rand(batch, *shape, generator=g)
    lik = LearnedSigmaGaussian(shape, sigma=0.7, sigma_min=1e-3)
    assert float(lik.sigma.detach()) == pytest.approx(0.7, rel=1e-6)  # it starts where the config says
    log_prob = lik(mean).log_prob(x)
    assert log_prob.shape == (batch,)
    torch.testing.assert_close(log_prob.double(), gaussian_by_hand(x, mean, lik.sigma.detach()), atol=1e-4, rtol=1e-6)

    # d(-sum log p)/d sigma = sum_i [d / sigma - |x_i - m_i|^2 / sigma^3], and d sigma / d raw = sigmoid(raw)
    (-log_prob.sum()).backward()
    s, raw = 0.7, float(lik.raw_sigma.detach())
    sq = ((x.double() - mean.double()) ** 2).sum()
    expected = (batch * d / s - sq / s**3) * torch.sigmoid(torch.tensor(raw, dtype=torch.float64))
    torch.testing.assert_close(lik.raw_sigma.grad.double(), expected, rtol=1e-4, atol=1e-4)
    assert abs(float(expected)) > 1  # a real slope at sigma = 0.7

    # the maximum-likelihood sigma^2 is the mean squared error: there the gradient vanishes
    at_optimum = LearnedSigmaGaussian(shape, sigma=math.sqrt(float(sq) / (batch * d)))
    (-at_optimum(mean).log_prob(x).sum()).backward()
    assert abs(float(at_optimum.raw_sigma.grad)) < 1e-3 * abs(float(expected))


def test_learned_sigma_is_a_model_parameter_that_training_moves():
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(16,), likelihood="gaussian-learned", sigma=1.0)
    assert "likelihood.raw_sigma" in dict(model.named_parameters())
    assert "likelihood.raw_sigma" in model.state_dict()  # saved with the weights
    x = torch.rand(64, 1, 8, 8) * 0.1  # data far tighter than sigma = 1: sigma must shrink
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        model.loss(x).total.backward()
        opt.step()
    assert float(model.likelihood.sigma.detach()) < 0.6


# --- per-pixel sigma(z) ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_pixel_sigma_log_prob(shape):
    g = torch.Generator().manual_seed(1)
    batch, channels = 5, shape[0]
    params = 3 * torch.randn(batch, 2 * channels, *shape[1:], generator=g)
    x = torch.rand(batch, *shape, generator=g)
    lik = PixelSigmaGaussian(shape, sigma_min=0.01)
    dist = lik(params)
    loc, raw = params[:, :channels], params[:, channels:]  # the first half of the channels is the mean
    sigma = 0.01 + F.softplus(raw)
    torch.testing.assert_close(dist.log_prob(x).double(), gaussian_by_hand(x, loc, sigma), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(dist.mean, loc)
    torch.testing.assert_close(dist.stddev, sigma)


def test_pixel_sigma_is_clamped_from_below():
    """A saturated decoder (raw -> -inf) gives sigma = sigma_min, so a perfectly fitted pixel has a finite density."""
    lik = PixelSigmaGaussian((4,), sigma_min=0.05)
    params = torch.cat([torch.zeros(1, 4), torch.full((1, 4), -1e4)], 1)
    dist = lik(params)
    torch.testing.assert_close(dist.stddev, torch.full((1, 4), 0.05))
    log_prob = dist.log_prob(torch.zeros(1, 4))
    assert torch.isfinite(log_prob).all()
    assert float(log_prob) == pytest.approx(4 * (-math.log(0.05) - 0.5 * LOG_2PI), rel=1e-5)


# --- continuous Bernoulli ---------------------------------------------------------------------------------------------


def cb_log_norm(lam: torch.Tensor) -> torch.Tensor:
    """log C(lam), C(lam) = 2 artanh(1 - 2 lam) / (1 - 2 lam) (= 2 at lam = 1/2), in float64."""
    u = 1 - 2 * lam.double()
    safe = torch.where(u.abs() < 1e-8, torch.full_like(u, 1e-8), u)
    return torch.log(2 * torch.atanh(safe) / safe)


@pytest.mark.parametrize("shape", SHAPES)
def test_continuous_bernoulli_log_prob_is_the_written_density(shape):
    g = torch.Generator().manual_seed(2)
    logits = 12 * torch.rand(7, *shape, generator=g) - 6
    logits.view(-1)[:3] = torch.tensor([0.0, 1e-3, -0.02])  # lam at and near 1/2, where C has a removable pole
    x = torch.rand(7, *shape, generator=g)
    x.view(-1)[3:5] = torch.tensor([0.0, 1.0])  # the ends of the support
    dist = ContinuousBernoulliLikelihood(shape)(logits)
    lam = torch.sigmoid(logits.double())
    by_hand = (cb_log_norm(lam) + x * torch.log(lam) + (1 - x) * torch.log1p(-lam)).flatten(1).sum(1)
    torch.testing.assert_close(dist.log_prob(x).double(), by_hand, atol=1e-4, rtol=1e-5)


def test_continuous_bernoulli_is_normalized_and_its_mean_integrates():
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    logits = torch.tensor([-4.0, -0.7, 0.0, 0.3, 2.5])
    dist = ContinuousBernoulliLikelihood((5,))(logits[None])
    density = torch.exp(dist.base_dist.log_prob(grid.float()).double())  # (grid, 5): per-pixel densities
    mass = torch.trapezoid(density, grid[:, 0], dim=0)
    torch.testing.assert_close(mass, torch.ones(5, dtype=torch.float64), atol=1e-4, rtol=0)
    mean = torch.trapezoid(grid * density, grid[:, 0], dim=0)
    torch.testing.assert_close(dist.mean[0].double(), mean, atol=1e-4, rtol=0)
    assert not torch.allclose(dist.mean[0], torch.sigmoid(logits), atol=1e-2)  # its mean is not lambda


# --- the data range each likelihood accepts ------------------------------------------------------------------------


def test_likelihoods_refuse_data_outside_their_support():
    x_grey, x_wide = torch.rand(3, 1, 4, 4), torch.full((3, 1, 4, 4), 255.0)
    for name in ("bernoulli", "continuous-bernoulli"):
        lik = LIKELIHOODS.get(name)((1, 4, 4))
        lik.check_data(x_grey)
        with pytest.raises(VaelabError, match=r"needs data in \[0, 1\], but the data range is \[255, 255\]") as err:
            lik.check_data(x_wide)
        assert name in str(err.value) and "likelihood=gaussian" in str(err.value)
    for name in ("gaussian", "gaussian-learned", "gaussian-pixel"):
        LIKELIHOODS.get(name)((1, 4, 4)).check_data(x_wide)  # any real data


def test_only_bernoulli_asks_for_binarized_data():
    assert [e.name for e in LIKELIHOODS if e.obj.needs_binary_data] == ["bernoulli"]


@pytest.mark.parametrize("likelihood", ["gaussian-learned", "gaussian-pixel", "continuous-bernoulli"])
@pytest.mark.parametrize(("shape", "backbone"), [((1, 8, 8), "mlp"), ((3, 16, 16), "conv"), ((10,), "mlp")])
def test_models_with_each_likelihood(likelihood, shape, backbone):
    torch.manual_seed(0)
    model = build_model(
        "vae", shape, latent_dim=3, hidden=(16,), channels=(4, 8), backbone=backbone, likelihood=likelihood
    )
    x = torch.rand(4, *shape)
    loss = model.loss(x)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    px = model.decode(torch.randn(5, 4, 3))
    assert px.batch_shape == (5, 4) and px.event_shape == shape and px.mean.shape == (5, 4, *shape)
    assert model.sample(2).shape == (2, *shape)


def test_bad_sigma_options():
    for options, word in (
        ({"likelihood": "gaussian-learned", "sigma": 1e-4}, "sigma_min"),
        ({"sigma_min": 0}, "sigma_min"),
        ({"likelihood": "laplace"}, "continuous-bernoulli"),
    ):
        with pytest.raises(VaelabError, match=word):
            build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,), **options)
