"""The linear-Gaussian family (pPCA, factor analysis): exact log p(x) and p(z|x) checked by independent routes
(scikit-learn, Monte Carlo), the closed form and EM fits, the ELBO identity, IWAE_K's rise, diagonal vs full q."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA, FactorAnalysis

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.linear_gaussian import LinearGaussian, as_multivariate
from vaelab.probability import importance_weighted_bound
from vaelab.runs import load


def synthetic(n: int = 400, dim: int = 8, d: int = 2, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """Data from a linear-Gaussian model with distinct scales per input (float64)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, d, generator=g, dtype=torch.float64) * torch.linspace(1, 3, d, dtype=torch.float64)
    scales = noise * torch.linspace(0.5, 1.5, dim, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z @ w.T + scales * torch.randn(n, dim, generator=g, dtype=torch.float64) + 0.5


def model(dim: int = 8, **options) -> LinearGaussian:
    return build_model("linear-gaussian", (dim,), **{"latent_dim": 2, **options}).double()


# -- exact log p(x) against scikit-learn and Monte Carlo --------------------------------------------------------------


def test_log_marginal_equals_sklearn_pca_score_samples_and_the_closed_form_is_its_fit():
    x = synthetic()
    train, test = x[:300], x[300:]
    pca = PCA(2).fit(train.numpy())
    m = model()
    w = torch.from_numpy(pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_))
    m.set_parameters(w, torch.from_numpy(pca.mean_), pca.noise_variance_)
    ours = m.log_marginal(test).detach().numpy()
    np.testing.assert_allclose(ours, pca.score_samples(test.numpy()), rtol=1e-10, atol=1e-9)

    # our maximum likelihood is sklearn's fit with the 1/N covariance (sklearn divides by N - 1)
    fitted = model()
    fitted.fit_closed_form(train)
    cov = fitted.weight @ fitted.weight.T + torch.diag(fitted.noise_variance())
    n = len(train)
    np.testing.assert_allclose(cov.detach().numpy(), pca.get_covariance() * (n - 1) / n, rtol=1e-8, atol=1e-10)


def test_log_marginal_equals_sklearn_factor_analysis_and_em_reaches_its_optimum():
    x = synthetic(noise=0.5)
    train, test = x[:300], x[300:]
    fa = FactorAnalysis(2, tol=1e-10, max_iter=10000, random_state=0).fit(train.numpy())
    m = model(noise="diagonal", fit="em")
    w, mean, psi = (torch.from_numpy(a) for a in (fa.components_.T, fa.mean_, fa.noise_variance_))
    m.set_parameters(w, mean, psi)
    np.testing.assert_allclose(
        m.log_marginal(test).detach().numpy(), fa.score_samples(test.numpy()), rtol=1e-10, atol=1e-9
    )

    em = model(noise="diagonal", fit="em", em_iterations=5000, em_tolerance=0.0)
    lls = list(em.fit_em(train))
    assert lls[-1] == pytest.approx(fa.score(train.numpy()), abs=1e-5)
    assert float(em.log_marginal(train).mean().detach()) == pytest.approx(lls[-1], abs=1e-9)


def test_log_marginal_against_monte_carlo_integration_over_the_prior():
    torch.manual_seed(0)
    m = model(dim=4)
    m.set_parameters(torch.randn(4, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64), torch.tensor(0.8))
    x = m.sample(5) + 0.3
    z = m.prior().sample((400_000,))
    log_px_z = m.decode(z[:, None]).log_prob(x)  # (S, 5)
    estimate = torch.logsumexp(log_px_z, 0) - math.log(len(z))
    weights = (log_px_z - log_px_z.max(0).values).exp()
    stderr = weights.std(0) / weights.mean(0) / math.sqrt(len(z))  # delta method: se of log of the mean
    exact = m.log_marginal(x)
    assert ((estimate - exact).abs() < 4 * stderr + 1e-6).all(), (estimate, exact, stderr)


def test_exact_posterior_is_bayes_rule_and_makes_importance_sampling_exact():
    torch.manual_seed(1)
    m = model(dim=5)
    m.set_parameters(torch.randn(5, 2, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), torch.tensor(0.5))
    x = torch.randn(6, 5, dtype=torch.float64)
    post = m.exact_posterior(x)
    z = torch.randn(3, 6, 2, dtype=torch.float64)
    bayes = m.decode(z).log_prob(x) + m.prior().log_prob(z) - m.log_marginal(x)
    torch.testing.assert_close(post.log_prob(z), bayes, rtol=1e-10, atol=1e-10)
    for k in (1, 7):  # p(x, z) / p(z|x) = p(x) for every z: the bound is tight at every K
        bound = importance_weighted_bound(x, post, m.prior(), m.decode, k)
        torch.testing.assert_close(bound, m.log_marginal(x), rtol=1e-10, atol=1e-10)


# -- the fits --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_em_never_decreases_the_likelihood_and_ppca_em_reaches_the_closed_form(noise):
    x = synthetic()
    torch.manual_seed(0)
    em = model(noise=noise, fit="em", em_iterations=3000, em_tolerance=0.0)
    lls = np.array(list(em.fit_em(x)))
    assert (np.diff(lls) >= -1e-10).all() and lls[-1] > lls[0] + 1
    if noise == "isotropic":
        best = model().fit_closed_form(x)
        assert lls[-1] == pytest.approx(best, abs=1e-5)
        assert (lls <= best + 1e-9).all()


def test_the_closed_form_is_a_stationary_point_of_the_exact_likelihood():
    x = synthetic()
    m = model()
    m.fit_closed_form(x)
    m.log_marginal(x).mean().backward()
    for p in (m.weight, m.bias, m.noise_raw):
        assert p.grad.abs().max() < 1e-8


# -- the bound ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_elbo_equals_log_px_minus_kl_to_the_posterior_for_any_q(family):
    torch.manual_seed(2)
    m = model(dim=6, latent_dim=3, fit="sgvb", posterior=family)
    x = torch.randn(10, 6, dtype=torch.float64)
    q = m.posterior(torch.randn(10, m.posterior.num_params, dtype=torch.float64))  # an arbitrary q per point
    kl = torch.distributions.kl_divergence(as_multivariate(q), m.exact_posterior(x))
    torch.testing.assert_close(m.elbo(x, q), m.log_marginal(x) - kl, rtol=1e-12, atol=1e-10)
    assert (kl > 0).all()
    # the SGVB estimate of the loss averages to the same ELBO
    z = q.rsample((200_000,))
    mc = (m.decode(z).log_prob(x) + m.prior().log_prob(z) - q.log_prob(z)).detach()
    assert ((mc.mean(0) - m.elbo(x, q).detach()).abs() < 4 * mc.std(0) / math.sqrt(len(z))).all()


def test_iwae_k_rises_towards_log_px():
    torch.manual_seed(3)
    m = model(dim=6, latent_dim=3, fit="sgvb")
    m.set_parameters(torch.randn(6, 3, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), torch.tensor(0.3))
    x = m.sample(20) + 0.5 * torch.randn(20, 6, dtype=torch.float64)
    post = m.exact_posterior(x)
    q = torch.distributions.Independent(torch.distributions.Normal(post.mean + 0.2, 0.6), 1)  # a poor q
    log_px, elbo = m.log_marginal(x).mean(), m.elbo(x, q).mean()
    bounds = [float(importance_weighted_bound(x, q, m.prior(), m.decode, k).mean()) for k in (1, 10, 100, 2000)]
    assert bounds[0] == pytest.approx(float(elbo), abs=0.5)
    assert all(a < b for a, b in zip(bounds, bounds[1:])) and bounds[-1] < float(log_px) + 1e-3
    assert float(log_px) - bounds[-1] < 0.05 * (float(log_px) - float(elbo))


def test_full_covariance_encoder_closes_the_gap_a_diagonal_one_leaves_when_w_is_not_orthogonal():
    torch.manual_seed(4)
    w = torch.tensor([[1.0, 0.9], [0.8, 1.0], [1.0, 1.1], [0.5, 0.7], [0.9, 0.6]], dtype=torch.float64)
    assert abs(float(w[:, 0] @ w[:, 1])) > 1  # correlated columns: p(z|x) is tilted
    gaps = {}
    for family in ("diagonal", "full"):
        m = model(dim=5, fit="sgvb", posterior=family)
        m.set_parameters(w, torch.zeros(5, dtype=torch.float64), torch.tensor(0.2))
        x = m.sample(200) + 0.45 * torch.randn(200, 5, dtype=torch.float64)
        optimizer = torch.optim.Adam(m.encoder.parameters(), lr=0.05)  # the decoder stays fixed
        for _ in range(600):
            optimizer.zero_grad()
            (-m.elbo(x, m.encode(x)).mean()).backward()
            optimizer.step()
        gaps[family] = float((m.log_marginal(x) - m.elbo(x, m.encode(x))).mean().detach())
        precision = m.exact_posterior(x[:1]).precision_matrix[0].detach()
        best_diagonal = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))  # min KL, mean field
    assert gaps["full"] < 0.01 * best_diagonal and best_diagonal > 0.1
    assert gaps["diagonal"] == pytest.approx(best_diagonal, rel=0.01)


# -- runs and bad input ------------------------------------------------------------------------------------------------


def test_closed_form_and_em_runs_are_ordinary_run_folders(tmp_path):
    run = vaelab.train("linear-gaussian", "digits", tmp_path / "cf", latent_dim=5)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "model", "figures/samples.png"):
        assert (run.path / name).exists(), name
    rows = run.metrics()
    assert [r["split"] for r in rows][:1] == ["train"] and rows[0]["step"] == 1
    fresh = build_model("linear-gaussian", (1, 8, 8), latent_dim=5)
    data = run.dataset()
    best = fresh.fit_closed_form(data.train)
    assert float(run.model.log_marginal(data.train).mean()) == pytest.approx(best, abs=1e-3)
    result = vaelab.evaluate(load(run.path), iw_samples=1)
    assert result["iwae"] == pytest.approx(float(run.model.log_marginal(data.test).mean()), abs=1e-3)
    em = vaelab.train("linear-gaussian", "digits", tmp_path / "em", latent_dim=5, fit="em", em_iterations=20)
    steps = [r["log_px"] for r in em.metrics() if r["split"] == "train"]
    assert len(steps) == 20 and all(a <= b + 1e-4 for a, b in zip(steps, steps[1:]))


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(VaelabError, match="latent_dim=9 must be smaller than the data dimension D=8"):
        model(latent_dim=9)
    with pytest.raises(VaelabError, match=r"no closed form for noise=diagonal.*use fit=em"):
        model(noise="diagonal")
    with pytest.raises(VaelabError, match="noise_floor must be > 0"):
        model(noise_floor=0)
    with pytest.raises(VaelabError, match="unknown fit 'gradient'; choose from: closed-form, em, sgvb"):
        model(fit="gradient")
    with pytest.raises(VaelabError, match=r"alternate needs an encoder.*use fit=sgvb"):
        vaelab.train("linear-gaussian", "digits", tmp_path / "a", alternate=2)
    assert not (tmp_path / "a").exists()


def test_a_singular_psi_is_floored_with_a_warning():
    x = synthetic()
    x[:, 3] = 0.25  # an input that never varies: psi_3 -> 0
    m = model(noise="diagonal", fit="em", em_iterations=50, noise_floor=1e-5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lls = list(m.fit_em(x))
    assert any("fell below noise_floor=1e-05" in str(w.message) for w in caught)
    assert float(m.noise_variance()[3]) == pytest.approx(1e-5, rel=1e-6)
    assert all(math.isfinite(v) for v in lls) and (np.diff(lls) >= -1e-9).all()
    ppca = model()  # sigma^2 <= 0: data on a line, the discarded eigenvalues are all zero
    line = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None] * torch.ones(1, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="sigma\\^2 of the closed-form fit: 1 of 1 noise variances fell below"):
        ppca.fit_closed_form(line)
    assert torch.isfinite(ppca.log_marginal(line)).all()
