"""Importance-weighted training, two stochastic layers, free bits and the IWAE learning-rate stages.

Independent routes: the IWAE loss recomputed from the same draws by hand; its gradient against the
self-normalized weighted sum of per-draw gradients (Burda et al. 2015, eq. 14); a chain of linear-Gaussian layers
against the joint Gaussian it must equal; bounds of an IWAE-trained model in the order Theorem 1 promises.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.probability import Chain, importance_log_weights, importance_weighted_bound, log_mean_exp
from vaelab.runs.config import TrainConfig
from vaelab.runs.schedules import LR_SCHEDULES


def binary_batch(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).round()


def small(name: str = "iwae", **options):
    torch.manual_seed(0)
    return build_model(name, (1, 8, 8), **{"latent_dim": 3, "hidden": (16,), **options})


# --- the IWAE loss ---------------------------------------------------------------------------------------------------


def test_iwae_loss_terms_from_the_same_draws():
    model, x = small(mc_samples=7), binary_batch()
    assert model.config.mc_samples == 7
    torch.manual_seed(2)
    loss = model.loss(x)
    torch.manual_seed(2)
    q, p = model.encode(x), model.prior()
    z = q.rsample((7,))  # the same draws the loss made
    log_px_z = model.decode(z).log_prob(x)
    log_ratio = p.log_prob(z) - q.log_prob(z)
    log_w = (log_px_z + log_ratio).double()
    bound = (torch.logsumexp(log_w, 0) - math.log(7)).mean()
    torch.testing.assert_close(loss.terms["iwae_k"].double(), bound, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(loss.total.double(), -bound, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(loss.terms["reconstruction"], -log_px_z.mean())
    torch.testing.assert_close(loss.terms["kl"], -log_ratio.mean())
    torch.testing.assert_close(loss.terms["elbo"].double(), log_w.mean(), atol=1e-4, rtol=1e-6)
    assert loss.terms["elbo"] < loss.terms["iwae_k"]  # Jensen, for every set of draws


def test_iwae_gradient_is_the_normalized_weighted_gradient():
    """d/dtheta log (1/K) sum_k w_k = sum_k (w_k / sum_j w_j) d log w_k / dtheta, on the same reparameterized draws."""
    model, x = small(mc_samples=5), binary_batch()
    torch.manual_seed(3)
    model.loss(x).total.backward()
    direct = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(3)
    log_px_z, log_ratio = importance_log_weights(x, model.encode(x), model.prior(), model.decode, 5)
    log_w = log_px_z + log_ratio
    weights = torch.softmax(log_w.detach(), dim=0)  # self-normalized importance weights, held constant
    (-(weights * log_w).sum(0).mean()).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, direct[name], atol=1e-5, rtol=1e-4)
    assert direct["encoder.net.0.weight"].abs().sum() > 0


def test_iwae_with_one_sample_is_the_vae():
    """K = 1: log w is one draw of log p(x|z) + log p(z) - log q(z|x); same draws, same ELBO as the VAE's MC KL."""
    iwae, vae = small(mc_samples=1), small("vae")
    vae.load_state_dict(iwae.state_dict())
    x = binary_batch()
    torch.manual_seed(4)
    a = iwae.loss(x)
    torch.manual_seed(4)
    b = vae.loss(x)
    torch.testing.assert_close(a.terms["reconstruction"], b.terms["reconstruction"])
    torch.testing.assert_close(a.terms["iwae_k"], a.terms["elbo"])


def test_iwae_kl_warmup_weighs_the_prior_ratio():
    model, x = small(mc_samples=4, kl_warmup_steps=10), binary_batch()
    for step, weight in ((0, 0.0), (5, 0.5), (None, 1.0)):
        torch.manual_seed(5)
        loss = model.loss(x, step)
        torch.manual_seed(5)
        log_px_z, log_ratio = importance_log_weights(x, model.encode(x), model.prior(), model.decode, 4)
        torch.testing.assert_close(loss.total, -log_mean_exp(log_px_z + weight * log_ratio).mean())


@pytest.fixture(scope="module")
def trained_iwae():
    """An IWAE (K=5) after 300 Adam steps on binarized 8x8 digits, and 100 held-out images."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy((load_digits().images / 16.0 > 0.5).astype(np.float32))[:, None]
    train, test = images[:-100], images[-100:]
    torch.manual_seed(0)
    model = build_model("iwae", (1, 8, 8), latent_dim=4, hidden=(64,), mc_samples=5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(300):
        loss = model.loss(train[torch.randint(len(train), (128,))], step).total
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert model.loss(test).total.item() < first - 5
    return model.eval(), test


@torch.no_grad()
def test_iwae_trained_model_bounds_are_ordered(trained_iwae):
    """E[ELBO] <= E[IWAE_5] <= E[IWAE_50] <= E[IWAE_500]: each from 500 independent draws per point, cut into blocks
    of K (an unbiased estimate of E[IWAE_K]); every gap must exceed 3 standard errors."""
    model, x = trained_iwae
    x = x.repeat(4, 1, 1, 1)
    q, p = model.encode(x), model.prior()
    torch.manual_seed(6)

    def expected_bound(k: int) -> torch.Tensor:
        blocks = [importance_weighted_bound(x, q, p, model.decode, k) for _ in range(500 // k)]
        return torch.stack(blocks).double().mean(0)

    z = q.sample((100,))
    elbo = (model.decode(z).log_prob(x) - kl_divergence(q, p)).double().mean(0)  # closed-form KL route
    bounds = [elbo] + [expected_bound(k) for k in (5, 50, 500)]
    means = [b.mean().item() for b in bounds]
    assert means == sorted(means), means
    for lower, upper in itertools.pairwise(bounds):
        gap = upper - lower
        assert gap.mean() > 3 * gap.std() / math.sqrt(gap.numel()), (gap.mean(), gap.std())


# --- two stochastic layers -------------------------------------------------------------------------------------------


def linear_gaussian_chain(flip: bool):
    """a ~ N(m, diag s^2), b | a ~ N(A a + c, diag t^2): jointly Gaussian, with a known mean and covariance."""
    g = torch.Generator().manual_seed(7)
    da, db = 3, 2
    m, s = torch.randn(da, generator=g), 0.5 + torch.rand(da, generator=g)
    A, c, t = torch.randn(db, da, generator=g), torch.randn(db, generator=g), 0.3 + torch.rand(db, generator=g)
    first = Independent(Normal(m, s), 1)
    chain = Chain(first, lambda a: Independent(Normal(a @ A.T + c, t), 1), db, flip=flip)
    A64, cov_a = A.double(), torch.diag(s.double() ** 2)
    mean = torch.cat([m.double(), A64 @ m.double() + c.double()])
    cov = torch.cat(
        [
            torch.cat([cov_a, cov_a @ A64.T], 1),
            torch.cat([A64 @ cov_a, A64 @ cov_a @ A64.T + torch.diag(t.double() ** 2)], 1),
        ]
    )
    if flip:  # the value is [b, a]
        order = torch.tensor([3, 4, 0, 1, 2])
        mean, cov = mean[order], cov[order][:, order]
    return chain, MultivariateNormal(mean, covariance_matrix=cov)


@pytest.mark.parametrize("flip", [False, True])
def test_chain_is_the_joint_distribution(flip):
    chain, joint = linear_gaussian_chain(flip)
    assert chain.event_shape == (5,)
    v = torch.randn(4, 5, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(chain.log_prob(v).double(), joint.log_prob(v.double()), atol=1e-4, rtol=1e-5)
    torch.manual_seed(9)
    draws = chain.sample((50_000,)).double()
    assert not draws.requires_grad
    se = joint.stddev / math.sqrt(len(draws))
    assert ((draws.mean(0) - joint.mean).abs() < 4.5 * se).all()
    torch.testing.assert_close(torch.cov(draws.T), joint.covariance_matrix, atol=0.08, rtol=0.05)


def test_two_layer_vae_has_the_iwae_paper_architecture():
    model = build_model(
        "vae",
        (1, 28, 28),
        hidden=(100, 100),
        inner_latent_dim=100,
        inner_hidden=(50, 50),
        latent_dim=50,
        activation="tanh",
    )

    def widths(net):
        return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]

    assert widths(model.encoder) == [(784, 100), (100, 100), (100, 200)]  # q(h|x): mean and scale of 100 units
    assert widths(model.upper_encoder) == [(100, 50), (50, 50), (50, 100)]  # q(z|h)
    assert widths(model.lower_decoder) == [(50, 50), (50, 50), (50, 200)]  # p(h|z)
    assert widths(model.decoder) == [(100, 100), (100, 100), (100, 784)]  # p(x|h)
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 8
    x = torch.rand(3, 1, 28, 28).round()
    assert model.code(x).shape == (3, 150) and model.sample(2).shape == (2, 1, 28, 28)


def test_two_layer_loss_is_a_monte_carlo_elbo_on_the_same_draws():
    model, x = small("vae", inner_latent_dim=4, inner_hidden=(8,), mc_samples=3), binary_batch()
    torch.manual_seed(10)
    loss = model.loss(x)
    torch.manual_seed(10)
    q = model.encode(x)
    v = q.rsample((3,))  # [h, z]
    assert v.shape == (3, 6, 7)
    h, z = v[..., :4], v[..., 4:]
    torch.testing.assert_close(loss.terms["reconstruction"], -model.decode(v).log_prob(x).mean())
    # log q(h, z|x) - log p(h, z), each layer's density written out from the model's own heads
    log_q = model.posterior(model.encoder(x)).log_prob(h) + model.upper_posterior(
        model.upper_encoder(h.reshape(-1, 4)).view(3, 6, -1)
    ).log_prob(z)
    log_p = Independent(Normal(torch.zeros(3), 1.0), 1).log_prob(z) + model.lower_prior(
        model.lower_decoder(z.reshape(-1, 3)).view(3, 6, -1)
    ).log_prob(h)
    torch.testing.assert_close(loss.terms["kl"], (log_q - log_p).mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.decode(v).mean, model.decode(torch.cat([h, torch.zeros_like(z)], -1)).mean)
    loss.total.backward()
    for name in ("upper_encoder.net.0.weight", "lower_decoder.net.0.weight", "encoder.net.0.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_two_layer_iwae_bound_rises_with_k():
    model, x = small("iwae", inner_latent_dim=4, inner_hidden=(8,)), binary_batch(50)
    torch.manual_seed(11)
    with torch.no_grad():
        b1 = torch.stack([model.log_likelihood(x, 1) for _ in range(20)]).mean(0)
        b50 = model.log_likelihood(x, 50)
    gap = (b50 - b1).double()
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap))


# --- free bits -------------------------------------------------------------------------------------------------------


def test_free_bits_penalty_and_its_gradient():
    """Units whose batch-mean KL is under lambda are not pushed to the prior: no gradient reaches them."""
    model = small("vae", free_bits=0.5)
    d, batch = 3, 8
    mu = torch.zeros(batch, d)
    mu[:, 0] = 2.0  # unit 0: KL ~ 2 nats, above lambda; units 1, 2: KL ~ 0
    h = torch.cat([mu, torch.full((batch, d), 0.5)], 1).requires_grad_(True)
    q, p = model.posterior(h), model.prior()
    per_unit = kl_divergence(q.base_dist, p.base_dist).mean(0)
    penalty = model.kl_penalty(q, p, kl_divergence(q, p))
    torch.testing.assert_close(penalty, per_unit.clamp(min=0.5).sum())
    assert per_unit[0] > 0.5 and (per_unit[1:] < 0.5).all()
    penalty.backward()
    grad = h.grad
    assert grad[:, [1, 2, 4, 5]].abs().max() == 0  # the free units' mean and scale get nothing
    assert grad[:, [0, 3]].abs().min() > 0
    # without free bits the same units are pulled
    no_free = small("vae")
    torch.testing.assert_close(no_free.kl_penalty(q, p, kl_divergence(q, p)), per_unit.sum())


def test_free_bits_on_a_full_covariance_posterior_is_one_group():
    model = small("vae", free_bits=0.5, posterior="full")
    x = binary_batch()
    q, p = model.encode(x), model.prior()
    kl = kl_divergence(q, p)
    assert kl.mean() < 1.5  # a fresh encoder: under 3 units x 0.5 nats
    assert float(model.kl_penalty(q, p, kl).detach()) == pytest.approx(1.5)


def test_free_bits_in_the_loss():
    model, x = small("vae", free_bits=0.5, kl_warmup_steps=10), binary_batch()
    torch.manual_seed(12)
    loss = model.loss(x, step=5)
    q, p = model.encode(x), model.prior()
    penalty = kl_divergence(q.base_dist, p.base_dist).mean(0).clamp(min=0.5).sum()
    torch.testing.assert_close(loss.total, loss.terms["reconstruction"] + 0.5 * penalty)
    torch.testing.assert_close(loss.terms["kl"], kl_divergence(q, p).mean())  # the report is the true KL


# --- the IWAE paper's learning-rate stages ----------------------------------------------------------------------------


def test_iwae_learning_rate_stages():
    """3^i passes at 10^(-i/7): stage 0 is epoch 0, stage 1 epochs 1-3, stage 2 epochs 4-12, ..., 7 from 1093."""
    schedule, tc = LR_SCHEDULES.get("iwae"), TrainConfig(lr_schedule="iwae")
    for epoch, stage in ((0, 0), (1, 1), (3, 1), (4, 2), (12, 2), (13, 3), (39, 3), (40, 4), (1092, 6), (1093, 7)):
        for step in (epoch * 10, epoch * 10 + 9):
            assert schedule(step, tc, 10, 32800) == pytest.approx(10 ** (-stage / 7)), (epoch, step)
    assert sum(3**i for i in range(8)) == 3280


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"mc_samples": 0}, ["mc_samples", ">= 1"]),
        ({"mc_samples": -5}, ["mc_samples"]),
        ({"gradient_estimator": "score-function"}, ["iwae", "reparameterization"]),
        ({"free_bits": 1.0}, ["free_bits", "iwae"]),
    ],
)
def test_iwae_bad_options(options, words):
    with pytest.raises(VaelabError) as err:
        build_model("iwae", (1, 8, 8), latent_dim=2, hidden=(8,), **options)
    for word in words:
        assert word in str(err.value)


def test_non_positive_sample_counts():
    model, x = small("iwae"), binary_batch()
    for k in (0, -3):
        with pytest.raises(VaelabError, match="importance samples must be >= 1"):
            model.log_likelihood(x, k)
    with pytest.raises(VaelabError, match="mc_samples must be >= 1"):
        build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,), mc_samples=0)
