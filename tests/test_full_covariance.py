"""The full-covariance posterior N(mu, L L^T): its parameterization, z = mu + L eps, and its KL.

The KL is checked against the formula written out,
    KL(N1 || N2) = 1/2 [log |S2| / |S1| - k + tr(S2^-1 S1) + (mu2 - mu1)^T S2^-1 (mu2 - mu1)],
computed here with dense float64 linear algebra, and against Monte Carlo with a tolerance of 4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.vae import VAEConfig
from vaelab.probability import importance_weighted_bound, standard_normal
from vaelab.probability.posteriors import MIN_SCALE, FullCovarianceGaussian


def full_head_input(batch: int, d: int, seed: int, raw_low: float = -3.0) -> torch.Tensor:
    """Means in [-2, 2], diagonal scales from softplus(raw_low) (~0.05) to ~2, off-diagonal entries ~N(0, 0.6^2)."""
    g = torch.Generator().manual_seed(seed)
    mu = 4 * torch.rand(batch, d, generator=g) - 2
    raw = (2 - raw_low) * torch.rand(batch, d, generator=g) + raw_low
    lower = 0.6 * torch.randn(batch, d * (d - 1) // 2, generator=g)
    return torch.cat([mu, raw, lower], dim=-1)


def kl_formula(mu1, cov1, mu2, cov2) -> torch.Tensor:
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    k = mu1.shape[-1]
    inv2 = torch.linalg.inv(cov2)
    diff = (mu2 - mu1).unsqueeze(-1)
    trace = torch.diagonal(inv2 @ cov1, dim1=-2, dim2=-1).sum(-1)
    mahalanobis = (diff.transpose(-1, -2) @ inv2 @ diff)[..., 0, 0]
    return 0.5 * (torch.logdet(cov2) - torch.logdet(cov1) - k + trace + mahalanobis)


def cov64(q: MultivariateNormal) -> torch.Tensor:
    """L L^T in float64: with scales down to 0.05 a float32 covariance loses the log-determinant's digits."""
    L = q.scale_tril.double()
    return L @ L.transpose(-1, -2)


def test_head_builds_a_cholesky_factor():
    d = 4
    h = full_head_input(3, d, seed=0)
    q = FullCovarianceGaussian(d)(h)
    assert q.batch_shape == (3,) and q.event_shape == (d,)
    assert FullCovarianceGaussian(d).num_params == h.shape[1] == d + d + d * (d - 1) // 2
    L = q.scale_tril
    torch.testing.assert_close(q.mean, h[:, :d])
    torch.testing.assert_close(torch.diagonal(L, dim1=-2, dim2=-1), F.softplus(h[:, d : 2 * d]) + MIN_SCALE)
    assert torch.equal(L, L.tril())  # lower-triangular
    rows, cols = torch.tril_indices(d, d, offset=-1)
    torch.testing.assert_close(L[:, rows, cols], h[:, 2 * d :])  # the strict lower triangle, row by row
    torch.testing.assert_close(q.covariance_matrix, L @ L.transpose(-1, -2), atol=1e-5, rtol=1e-5)
    # leading sample dimensions pass through (the two-layer model feeds it (K, B, F))
    assert FullCovarianceGaussian(d)(h.expand(5, 3, -1)).batch_shape == (5, 3)


def test_kl_to_the_prior_and_to_another_full_gaussian_match_the_formula():
    d, batch = 4, 6
    q1 = FullCovarianceGaussian(d)(full_head_input(batch, d, seed=1))
    q2 = FullCovarianceGaussian(d)(full_head_input(batch, d, seed=2, raw_low=0.0))  # wide: a usable MC check
    prior = standard_normal(d)
    kl_prior = kl_divergence(q1, prior)  # MultivariateNormal vs Independent(Normal): vaelab's registered rule
    assert kl_prior.shape == (batch,)
    eye = torch.eye(d).expand(batch, d, d)
    expected = kl_formula(q1.mean, cov64(q1), torch.zeros(batch, d), eye)
    torch.testing.assert_close(kl_prior.double(), expected, atol=1e-4, rtol=1e-5)
    # KL(N(mu, LL^T) || N(0, I)) = 1/2 [||L||_F^2 + ||mu||^2 - k - 2 sum log L_ii], a second written form
    L = q1.scale_tril.double()
    frob = 0.5 * ((L**2).sum((-1, -2)) + (q1.mean.double() ** 2).sum(-1) - d)
    torch.testing.assert_close(kl_prior.double(), frob - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1))

    kl_pair = kl_divergence(q1, q2)
    expected = kl_formula(q1.mean, cov64(q1), q2.mean, cov64(q2))
    torch.testing.assert_close(kl_pair.double(), expected, atol=1e-3, rtol=1e-4)
    assert (expected > 1).all()  # far apart: every term of the formula matters

    # Monte Carlo: KL = E_q1[log q1(z) - log p(z)], per-row standard error from the same draws
    torch.manual_seed(3)
    n = 100_000
    z = q1.sample((n,))
    for p, kl in ((prior, kl_prior), (q2, kl_pair)):
        log_ratio = (q1.log_prob(z) - p.log_prob(z)).double()
        mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
        assert (se < 0.1).all()
        assert ((mc - kl.double()).abs() < 4 * se).all(), (mc, kl, se)


def test_log_prob_is_the_written_density():
    d = 3
    q = FullCovarianceGaussian(d)(full_head_input(4, d, seed=4))
    z = torch.randn(7, 4, d, generator=torch.Generator().manual_seed(5))
    cov = cov64(q)
    diff = (z.double() - q.mean.double()).unsqueeze(-1)
    maha = (diff.transpose(-1, -2) @ torch.linalg.inv(cov) @ diff)[..., 0, 0]
    by_hand = -0.5 * (maha + torch.logdet(cov) + d * math.log(2 * math.pi))
    torch.testing.assert_close(q.log_prob(z).double(), by_hand, atol=1e-4, rtol=1e-5)


def test_reparameterized_gradient_matches_analytic():
    """f(z) = ||z||^2 with z = mu + L eps: E f = ||mu||^2 + ||L||_F^2, so the gradients are 2 mu, 2 L_ij below the
    diagonal and 2 L_ii sigmoid(raw_i) on it. Per-copy gradients of 4000 single draws give the standard errors."""
    d, reps = 3, 4000
    h = full_head_input(2, d, seed=6)
    h_rep = h.repeat(reps, 1).requires_grad_(True)
    q = FullCovarianceGaussian(d)(h_rep)
    torch.manual_seed(7)
    (q.rsample() ** 2).sum().backward()
    grads = h_rep.grad.view(reps, 2, -1).double()
    L = FullCovarianceGaussian(d)(h).scale_tril.double()
    rows, cols = torch.tril_indices(d, d, offset=-1)
    diag = torch.diagonal(L, dim1=-2, dim2=-1)
    expected = torch.cat(
        [2 * h[:, :d].double(), 2 * diag * torch.sigmoid(h[:, d : 2 * d].double()), 2 * L[:, rows, cols]], dim=-1
    )
    z_scores = (grads.mean(0) - expected) / (grads.std(0) / math.sqrt(reps))
    assert expected.abs().max() > 1
    assert z_scores.abs().max() < 4.5, z_scores
    assert (z_scores**2).mean() < 2


def test_exact_full_covariance_posterior_makes_every_importance_weight_log_px():
    """Probabilistic PCA has a correlated Gaussian posterior; the full head can express it exactly, and then
    w = p(x, z) / q(z|x) = p(x) for every z: IWAE_1 = log p(x) to rounding, which a diagonal head cannot reach."""
    from tests.test_probability import LinearGaussian, inverse_softplus

    lg = LinearGaussian(data_dim=6, latent_dim=3, noise=0.4)
    mean, cov = lg.exact_posterior()
    L = torch.linalg.cholesky(cov)
    assert L.tril(-1).abs().max() > 0.05  # really correlated
    rows, cols = torch.tril_indices(3, 3, offset=-1)
    raw = inverse_softplus(torch.diagonal(L) - MIN_SCALE)
    h = torch.cat([mean, raw.expand(len(mean), 3), L[rows, cols].expand(len(mean), 3)], dim=-1).float()
    q = FullCovarianceGaussian(3)(h)
    torch.manual_seed(8)
    bound = importance_weighted_bound(lg.x, q, standard_normal(3), lg.decode, 1)
    torch.testing.assert_close(bound.double(), lg.log_px(), atol=2e-3, rtol=1e-5)


def test_vae_with_a_full_covariance_posterior():
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=3, hidden=(16,), posterior="full")
    x = torch.rand(5, 1, 8, 8).round()
    q = model.encode(x)
    assert isinstance(q, MultivariateNormal) and q.batch_shape == (5,)
    loss = model.loss(x)
    expected = kl_formula(q.mean, cov64(q), torch.zeros(5, 3), torch.eye(3).expand(5, 3, 3)).mean()
    torch.testing.assert_close(loss.terms["kl"].double(), expected, atol=1e-4, rtol=1e-5)
    loss.total.backward()
    lower = model.encoder.net[-1].weight.grad[-3:]  # the rows that output L's off-diagonal entries
    assert lower.abs().sum() > 0
    assert model.log_likelihood(x, 20).shape == (5,)


def test_full_covariance_too_large_for_the_memory_budget():
    VAEConfig(posterior="full", latent_dim=360)  # the largest that fits: only the config is built
    for key, options in (("latent_dim", {"latent_dim": 361}), ("inner_latent_dim", {"inner_latent_dim": 1000})):
        with pytest.raises(VaelabError, match="memory budget") as err:
            VAEConfig(posterior="full", **options)
        assert f"{key} <= 360" in str(err.value) and "posterior=diagonal" in str(err.value)
    with pytest.raises(VaelabError, match="memory budget"):
        FullCovarianceGaussian(2000)
    VAEConfig(posterior="diagonal", latent_dim=2000)  # the diagonal head has no such limit
