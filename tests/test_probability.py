"""The probabilistic core against independent routes: closed forms, Monte Carlo, and a model with a known log p(x).

Monte Carlo checks use fixed seeds and tolerances of a few standard errors (SE) estimated from the same samples,
so a failure means a real mismatch, not bad luck: with 4 SE a correct implementation fails about 1 time in 16 000
per compared number, and the fixed seeds make every run draw the same numbers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.probability import importance_log_weights, importance_weighted_bound, log_mean_exp, standard_normal
from vaelab.probability.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vaelab.probability.posteriors import MIN_SCALE, POSTERIORS, DiagonalGaussian, LogVarianceGaussian

LOG_2PI = math.log(2 * math.pi)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def diagonal_head_input(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The raw encoder output h for which the DiagonalGaussian head gives N(mu, sigma^2)."""
    return torch.cat([mu, inverse_softplus(sigma - MIN_SCALE)], dim=-1)


def spread_head_input(batch: int, latent: int, seed: int) -> torch.Tensor:
    """Encoder outputs with means in [-2, 2] and sigmas from ~0.05 to ~2, so every term of the KL matters."""
    g = torch.Generator().manual_seed(seed)
    mu = 4 * torch.rand(batch, latent, generator=g) - 2
    raw = 5 * torch.rand(batch, latent, generator=g) - 3
    return torch.cat([mu, raw], dim=-1)


class Replay:
    """A posterior whose rsample hands out a fixed bank of draws in order: results cannot depend on the RNG."""

    def __init__(self, q, bank: torch.Tensor) -> None:
        self.q, self.bank, self.used, self.calls = q, bank, 0, 0

    def rsample(self, shape: tuple[int, ...]):
        k = shape[0]
        z = self.bank[self.used : self.used + k]
        assert z.shape[0] == k, "the bound asked for more samples than it was given"
        self.used += k
        self.calls += 1
        return z

    def log_prob(self, z):
        return self.q.log_prob(z)


# --- the diagonal Gaussian posterior and its KL to N(0, I) ---------------------------------------------------------


def test_diagonal_head_parameterization():
    h = spread_head_input(5, 3, seed=0)
    q = DiagonalGaussian(3)(h)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    torch.testing.assert_close(q.mean, h[:, :3])
    torch.testing.assert_close(q.stddev, F.softplus(h[:, 3:]) + MIN_SCALE)
    # a saturated encoder still gives a positive scale and a finite log density
    q_sat = DiagonalGaussian(2)(torch.tensor([[0.0, 0.0, -200.0, -200.0]]))
    assert (q_sat.stddev >= MIN_SCALE).all()
    assert torch.isfinite(q_sat.log_prob(torch.zeros(1, 2))).all()


def test_log_variance_head_is_pythaes_parameterization():
    """sigma = exp(log_var / 2), as in pythae's VAE; the KL to N(0, I) is its -1/2 sum(1 + lv - mu^2 - e^lv)."""
    h = spread_head_input(5, 3, seed=3)
    q = LogVarianceGaussian(3)(h)
    mu, log_var = h[:, :3].double(), h[:, 3:].double()
    torch.testing.assert_close(q.stddev.double(), torch.exp(0.5 * log_var))
    pythae_kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(-1)
    torch.testing.assert_close(kl_divergence(q, standard_normal(3)).double(), pythae_kl, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_every_posterior_head_holds_the_gaussians_it_gives_and_samples_them(name):
    """Over every registered head: params_of inverts the head (the start of a per-point fit of q), log_prob is the
    density of what rsample draws (moments within 4 SE), and gradients reach the head's inputs."""
    latent, batch = 3, 4
    head = POSTERIORS.get(name)(latent)
    h = torch.randn(batch, head.num_params, generator=torch.Generator().manual_seed(4)).requires_grad_()
    q = head(h)

    def covariance(q):
        return q.covariance_matrix if isinstance(q, MultivariateNormal) else torch.diag_embed(q.variance)

    again = head(head.params_of(q))
    torch.testing.assert_close(again.mean, q.mean)
    torch.testing.assert_close(covariance(again), covariance(q), rtol=1e-4, atol=1e-5)
    torch.manual_seed(5)
    n = 50_000
    z = q.rsample((n,))
    se = q.stddev / math.sqrt(n)
    assert ((z.mean(0) - q.mean).abs() < 4 * se).all()
    written = MultivariateNormal(q.mean, covariance(q)).log_prob(z[:5])
    torch.testing.assert_close(q.log_prob(z[:5]), written, rtol=1e-4, atol=1e-4)
    z.pow(2).sum().backward()
    assert h.grad is not None and (h.grad.abs().sum(0) > 0).all()


def kl_formula(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2), in float64."""
    mu, var = mu.double(), sigma.double() ** 2
    return 0.5 * (var + mu**2 - 1 - torch.log(var)).sum(-1)


@pytest.mark.parametrize("source", ["head", "vae"])
def test_kl_closed_form_matches_formula_and_monte_carlo(source):
    latent, batch = 4, 6
    if source == "head":
        q = DiagonalGaussian(latent)(spread_head_input(batch, latent, seed=1))
    else:
        torch.manual_seed(0)
        model = build_model("vae", (1, 8, 8), latent_dim=latent, hidden=(32,))
        with torch.no_grad():  # a wider spread of means and scales than a fresh init gives
            model.encoder.net[-1].weight.mul_(4.0)
        x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            q = model.encode(x)
    p = standard_normal(latent)
    kl = kl_divergence(q, p)
    assert kl.shape == (batch,)
    torch.testing.assert_close(kl.double(), kl_formula(q.mean, q.stddev), atol=1e-5, rtol=1e-5)

    # Monte Carlo: KL = E_q[log q(z) - log p(z)]; per-row SE from the sample standard deviation
    torch.manual_seed(2)
    n = 100_000
    z = q.sample((n,))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).double()
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert (se < 0.05).all()  # the check has teeth
    assert ((mc - kl.double()).abs() < 4 * se).all(), (mc, kl, se)


# --- reparameterization ----------------------------------------------------------------------------------------


def test_rsample_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=3, hidden=(16,))
    x = torch.rand(8, 1, 8, 8)
    z = model.encode(x).rsample((32,))
    assert z.shape == (32, 8, 3)
    (z**2).sum(-1).mean().backward()
    for name, param in model.encoder.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_reparameterized_gradient_matches_analytic():
    """f(z) = sum z^2: E_q f = sum (mu^2 + sigma^2), so dE/dmu = 2 mu and dE/draw = 2 sigma * sigmoid(raw)."""
    latent, n = 3, 200_000
    h = spread_head_input(4, latent, seed=3).requires_grad_(True)
    q = DiagonalGaussian(latent)(h)
    mu, raw = h.detach()[:, :latent], h.detach()[:, latent:]
    sigma = F.softplus(raw) + MIN_SCALE
    torch.manual_seed(4)
    f = (q.rsample((n,)) ** 2).sum(-1)  # (n, B)
    value = f.mean(0)
    value.sum().backward()

    exact_value = (mu**2 + sigma**2).sum(-1)
    assert ((value.detach() - exact_value).abs() < 4 * f.detach().std(0) / math.sqrt(n)).all()

    # per-sample gradients: d z^2/dmu = 2z (sd 2 sigma), d z^2/dsigma = 2 z eps (sd 2 sqrt(mu^2 + 2 sigma^2))
    grad_mu, grad_raw = h.grad[:, :latent], h.grad[:, latent:]
    se_mu = 2 * sigma / math.sqrt(n)
    se_raw = torch.sigmoid(raw) * 2 * torch.sqrt(mu**2 + 2 * sigma**2) / math.sqrt(n)
    assert ((grad_mu - 2 * mu).abs() < 4 * se_mu).all(), (grad_mu, 2 * mu)
    assert ((grad_raw - 2 * sigma * torch.sigmoid(raw)).abs() < 4 * se_raw).all()
    assert (se_mu < 0.01).all() and (se_raw < 0.02).all()


# --- likelihoods -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 5), (10,)])
def test_bernoulli_log_prob_is_minus_bce(shape):
    g = torch.Generator().manual_seed(5)
    logits = 12 * torch.rand(7, *shape, generator=g) - 6
    lik = BernoulliLikelihood(shape)
    dims = tuple(range(1, len(shape) + 1))
    for x in (torch.rand(7, *shape, generator=g).round(), torch.rand(7, *shape, generator=g)):  # binary, grey
        log_prob = lik(logits).log_prob(x)
        assert log_prob.shape == (7,)
        s = torch.sigmoid(logits.double())
        by_hand = (x * torch.log(s) + (1 - x) * torch.log(1 - s)).sum(dims)
        torch.testing.assert_close(log_prob.double(), by_hand, atol=1e-4, rtol=1e-5)
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dims)
        torch.testing.assert_close(log_prob, -bce, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lik(logits).mean, torch.sigmoid(logits))


@pytest.mark.parametrize("sigma", [1.0, 0.3])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 5), (10,)])
def test_gaussian_log_prob_formula(shape, sigma):
    g = torch.Generator().manual_seed(6)
    mean, x = torch.randn(5, *shape, generator=g), torch.rand(5, *shape, generator=g)
    dist = GaussianLikelihood(shape, sigma=sigma)(mean)
    d = math.prod(shape)
    sq = ((x.double() - mean.double()) ** 2).flatten(1).sum(1)
    by_hand = -0.5 * sq / sigma**2 - d * math.log(sigma) - 0.5 * d * LOG_2PI
    torch.testing.assert_close(dist.log_prob(x).double(), by_hand, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(dist.mean, mean)
    with pytest.raises(VaelabError, match="sigma"):
        GaussianLikelihood(shape, sigma=0.0)


# --- the importance-weighted bound on a VAE trained on binarized digits ------------------------------------------


@pytest.fixture(scope="module")
def digits_vae():
    """A small VAE after 400 Adam steps on binarized 8x8 digits, and 200 held-out images."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy((load_digits().images / 16.0 > 0.5).astype(np.float32))[:, None]
    train, test = images[:-200], images[-200:]
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=4, hidden=(64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(400):
        batch = train[torch.randint(len(train), (128,))]
        loss = model.loss(batch, step).total
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert model.loss(test).total.item() < first - 5  # it did learn something
    return model, test


def sample_elbo(model, x, samples):
    """Per-sample ELBO terms log p(x|z_l) - KL (closed form), shape (samples, B): a route with no IWAE in it."""
    q = model.encode(x)
    z = q.sample((samples,))
    return model.decode(z).log_prob(x) - kl_divergence(q, model.prior())


@torch.no_grad()
def test_iwae_formula_on_fixed_draws(digits_vae):
    """With the draws fixed, IWAE_K is exactly logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k)) - log K."""
    model, x = digits_vae
    x = x[:20]
    q, p = model.encode(x), model.prior()
    torch.manual_seed(7)
    for k in (1, 13):
        bank = q.sample((k,))
        log_w = model.decode(bank).log_prob(x) + p.log_prob(bank) - q.log_prob(bank)
        expected = torch.logsumexp(log_w.double(), 0) - math.log(k)
        got = importance_weighted_bound(x, Replay(q, bank), p, model.decode, k)
        assert got.shape == (20,)
        torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-6)


@torch.no_grad()
def test_iwae_one_sample_is_the_elbo_in_expectation(digits_vae):
    model, x = digits_vae
    reps = 100
    torch.manual_seed(8)
    xr = x.repeat(reps, 1, 1, 1)  # 20 000 independent single-sample bounds
    iw1 = importance_weighted_bound(xr, model.encode(xr), model.prior(), model.decode, 1).double()
    elbo = sample_elbo(model, x, reps).double()  # same number of draws, closed-form KL
    diff = iw1.mean() - elbo.mean()
    se = math.sqrt(iw1.var() / iw1.numel() + elbo.var() / elbo.numel())
    assert se < 0.1
    assert abs(diff) < 4 * se, (diff, se)


@torch.no_grad()
def test_iwae_is_ordered_in_k(digits_vae):
    """ELBO <= E[IWAE_5] <= E[IWAE_50] <= E[IWAE_500] (Burda et al. 2015, Theorem 1), on 1 000 bounds per K.

    The true gap from K = 50 to 500 is only ~0.02 nats on this model, so E[IWAE_K] is estimated with little
    noise: each K gets its own independent bank of 500 draws per point, cut into 500/K disjoint blocks, and
    the library's bound on each block is averaged (an unbiased estimate of E[IWAE_K], 500/K times less noisy).
    Each gap must then exceed 3 SE; on this seed the smallest gap is ~5 SE.
    """
    model, x = digits_vae
    x = x.repeat(5, 1, 1, 1)
    q, p = model.encode(x), model.prior()
    torch.manual_seed(9)
    elbo = sample_elbo(model, x, 100).double().mean(0)  # per point, closed-form KL

    def expected_bound(k: int) -> torch.Tensor:
        replay = Replay(q, q.sample((500,)))
        blocks = [importance_weighted_bound(x, replay, p, model.decode, k) for _ in range(500 // k)]
        assert replay.used == 500
        return torch.stack(blocks).double().mean(0)

    bounds = [elbo] + [expected_bound(k) for k in (5, 50, 500)]
    means = [b.mean().item() for b in bounds]
    assert means == sorted(means), means
    for lower, upper in itertools.pairwise(bounds):
        gap = upper - lower
        se = gap.std() / math.sqrt(gap.numel())
        assert gap.mean() > 3 * se, (gap.mean(), se)


@torch.no_grad()
def test_iwae_chunking_does_not_change_the_bound(digits_vae):
    """Same draws, same bound: the tiled, running-logsumexp route against the plain one that keeps all K weights,
    over tiles of one decoder row, of fewer rows than points, of several samples of every point, and one tile."""
    model, x = digits_vae
    x = x[:16]
    q, p = model.encode(x), model.prior()
    per_point = x[0].numel()
    k = 50
    torch.manual_seed(10)
    bank = q.sample((k,))
    log_px_z, log_ratio = importance_log_weights(x, Replay(q, bank), p, model.decode, k)
    plain = log_mean_exp(log_px_z + log_ratio)
    for chunk in (1, 5 * per_point, 16 * per_point, 7 * 16 * per_point, 10**9):
        replay = Replay(q, bank)
        tiled = importance_weighted_bound(x, replay, p, model.decode, k, chunk=chunk)
        assert replay.used == k
        torch.testing.assert_close(tiled, plain, atol=1e-5, rtol=1e-6)
    for budget in (1 * per_point, 7 * x.numel()):  # the memory budget caps the tiles too
        tiled = importance_weighted_bound(x, Replay(q, bank), p, model.decode, k, budget=budget)
        torch.testing.assert_close(tiled, plain, atol=1e-5, rtol=1e-6)
    for budget, chunks in ((per_point, 50), (7 * x.numel(), 8), (x.numel() * 49, 2)):  # the plain route
        replay = Replay(q, bank)
        a, b = importance_log_weights(x, replay, p, model.decode, k, budget=budget)
        assert replay.calls == chunks and replay.used == k
        torch.testing.assert_close(log_mean_exp(a + b), plain, atol=1e-5, rtol=1e-6)

    # and with real sampling the two give the same distribution of values (means over 3 200 bounds)
    xr = x.repeat(200, 1, 1, 1)
    qr = model.encode(xr)
    torch.manual_seed(11)
    a = importance_weighted_bound(xr, qr, p, model.decode, 20).double()
    torch.manual_seed(11)
    b = importance_weighted_bound(xr, qr, p, model.decode, 20, budget=3 * xr.numel()).double()
    se = math.sqrt(a.var() / a.numel() + b.var() / b.numel())
    assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)


def test_iwae_refuses_zero_samples(digits_vae):
    model, x = digits_vae
    with pytest.raises(VaelabError, match="importance samples"):
        importance_weighted_bound(x, model.encode(x), model.prior(), model.decode, 0)


def test_vae_log_likelihood_is_the_iwae_bound(digits_vae):
    model, x = digits_vae
    torch.manual_seed(12)
    ll = model.log_likelihood(x, samples=200).double()
    torch.manual_seed(12)
    with torch.no_grad():
        iw = importance_weighted_bound(x, model.encode(x), model.prior(), model.decode, 200).double()
    assert ll.shape == (len(x),) and not ll.requires_grad
    se = math.sqrt(ll.var() / ll.numel() + iw.var() / iw.numel())
    assert abs(ll.mean() - iw.mean()) < 4 * se


# --- a linear-Gaussian model (probabilistic PCA), where log p(x) is known exactly -------------------------------


class LinearGaussian:
    """p(z) = N(0, I_d), p(x|z) = N(Wz + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I), p(z|x) Gaussian."""

    def __init__(self, data_dim: int = 6, latent_dim: int = 2, noise: float = 0.5, seed: int = 13) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(data_dim, latent_dim, generator=g)
        self.b = torch.randn(data_dim, generator=g)
        self.noise, self.latent_dim = noise, latent_dim
        self.likelihood = GaussianLikelihood((data_dim,), sigma=noise)
        z = torch.randn(200, latent_dim, generator=g)
        self.x = z @ self.W.T + self.b + noise * torch.randn(200, data_dim, generator=g)

    def decode(self, z):
        return self.likelihood(z @ self.W.T + self.b)

    def log_px(self) -> torch.Tensor:
        W, b = self.W.double(), self.b.double()
        cov = W @ W.T + self.noise**2 * torch.eye(len(b), dtype=torch.float64)
        return MultivariateNormal(b, covariance_matrix=cov).log_prob(self.x.double())

    def exact_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, d) and covariance (d, d): Sigma = (I + W^T W / s^2)^-1, mu = Sigma W^T (x - b) / s^2."""
        W = self.W.double()
        cov = torch.linalg.inv(torch.eye(self.latent_dim, dtype=torch.float64) + W.T @ W / self.noise**2)
        mean = (self.x.double() - self.b.double()) @ W @ cov / self.noise**2
        return mean, cov


def test_linear_gaussian_exact_posterior_gives_log_px_for_any_k():
    lg = LinearGaussian()
    mean, cov = lg.exact_posterior()
    q = MultivariateNormal(mean.float(), scale_tril=torch.linalg.cholesky(cov).float())
    truth = lg.log_px()
    torch.manual_seed(14)
    for k, budget in ((1, None), (7, None), (300, None), (300, 30 * lg.x.numel())):
        kwargs = {} if budget is None else {"budget": budget}
        got = importance_weighted_bound(lg.x, q, standard_normal(lg.latent_dim), lg.decode, k, **kwargs)
        torch.testing.assert_close(got.double(), truth, atol=2e-4, rtol=1e-5)


def imperfect_proposal(lg: LinearGaussian):
    """The library's diagonal head with a shifted mean, too-wide scales and no correlation: q != p(z|x)."""
    mean, cov = lg.exact_posterior()
    sd = cov.diagonal().sqrt()
    h = diagonal_head_input((mean + 0.5 * sd).float(), (1.5 * sd).float().expand_as(mean))
    return DiagonalGaussian(lg.latent_dim)(h), h


def test_linear_gaussian_elbo_gap_is_the_kl_to_the_true_posterior():
    """E[IWAE_1] = ELBO = log p(x) - KL(q || p(z|x)), all Gaussian, so the right side is closed form."""
    lg = LinearGaussian()
    q, h = imperfect_proposal(lg)
    mean, cov = lg.exact_posterior()
    q_full = MultivariateNormal(q.mean.double(), covariance_matrix=torch.diag_embed(q.variance.double()))
    elbo = lg.log_px() - kl_divergence(q_full, MultivariateNormal(mean, covariance_matrix=cov))
    assert (lg.log_px() - elbo).mean() > 0.5  # a real gap to close

    reps = 50  # 10 000 single-sample bounds
    xr, qr = lg.x.repeat(reps, 1), DiagonalGaussian(lg.latent_dim)(h.repeat(reps, 1))
    torch.manual_seed(16)
    iw1 = importance_weighted_bound(xr, qr, standard_normal(lg.latent_dim), lg.decode, 1).double()
    diff = iw1 - elbo.repeat(reps)
    se = diff.std() / math.sqrt(diff.numel())
    assert se < 0.05
    assert diff.mean().abs() < 4 * se, (diff.mean(), se)


def test_linear_gaussian_iwae_climbs_to_log_px():
    lg = LinearGaussian()
    p = standard_normal(lg.latent_dim)
    truth = lg.log_px()

    # E[IWAE_K] for K = 1, 10, 100, 1000 from one bank of 1000 draws per point, cut into r = 1000/K disjoint
    # blocks of K (unbiased for each K; sharing the bank pairs the comparison, which the small high-K gaps need).
    # One call per K: the data and the proposal are repeated r times, each copy gets its own block of draws.
    q, h = imperfect_proposal(lg)
    torch.manual_seed(15)
    bank = q.sample((1000,))  # (1000, B, d)
    batch = len(lg.x)
    gaps = []
    for k in (1, 10, 100, 1000):
        r = 1000 // k
        replay = Replay(DiagonalGaussian(lg.latent_dim)(h.repeat(r, 1)), bank.reshape(k, r * batch, -1))
        bound = importance_weighted_bound(lg.x.repeat(r, 1), replay, p, lg.decode, k)
        assert replay.used == k
        gaps.append((truth - bound.double().view(r, batch).mean(0)).mean().item())
    assert gaps[0] > 0.5 and gaps == sorted(gaps, reverse=True), gaps

    # the library's own sampling at K = 5000 lands on log p(x); per-point tolerance from the relative variance v
    # of the weights, estimated by an independent route (torch Normal densities in float64):
    # sd(IWAE_K) ~ sqrt(v / K), bias ~ v / 2K
    k = 5000
    torch.manual_seed(17)
    got = importance_weighted_bound(lg.x, q, p, lg.decode, k).double()
    z = q.sample((20_000,)).double()
    prior = Independent(Normal(torch.zeros(lg.latent_dim, dtype=torch.float64), 1.0), 1)
    lik = Independent(Normal(z @ lg.W.double().T + lg.b.double(), lg.noise), 1)
    q64 = Independent(Normal(q.mean.double(), q.stddev.double()), 1)
    w = torch.exp(lik.log_prob(lg.x.double()) + prior.log_prob(z) - q64.log_prob(z) - truth)  # E_q w = 1
    assert (w.mean(0) - 1).abs().mean() < 0.05
    v = w.var(0)
    tol = 5 * torch.sqrt(v / k) + v / k
    assert (tol < 0.15).all()
    assert ((got - truth).abs() < tol).all(), ((got - truth).abs().max(), tol)
    assert abs((got - truth).mean()) < 0.01


def test_linear_gaussian_iwae_gradient_is_the_elbo_gradient_for_k1():
    """The bound is differentiable ("so it can be trained"): E[d IWAE_1 / dh] = d ELBO / dh, the right side by
    autograd through the closed form log p(x) - KL(q_h || p(z|x)); h is the raw input of the library's head."""
    lg = LinearGaussian()
    batch, reps = 10, 2000
    lg.x = lg.x[:batch]
    _, h = imperfect_proposal(lg)
    mean, cov = lg.exact_posterior()

    h_exact = h.detach().clone().requires_grad_(True)
    q = DiagonalGaussian(lg.latent_dim)(h_exact)
    q_full = MultivariateNormal(q.mean.double(), covariance_matrix=torch.diag_embed(q.variance.double()))
    kl = kl_divergence(q_full, MultivariateNormal(mean, covariance_matrix=cov))
    (-kl).sum().backward()
    expected = h_exact.grad  # d ELBO / dh (log p(x) does not depend on h)

    h_rep = h.detach().repeat(reps, 1).requires_grad_(True)  # one leaf per copy: per-copy gradients give the SE
    torch.manual_seed(18)
    bound = importance_weighted_bound(
        lg.x.repeat(reps, 1), DiagonalGaussian(lg.latent_dim)(h_rep), standard_normal(lg.latent_dim), lg.decode, 1
    )
    bound.sum().backward()
    grads = h_rep.grad.view(reps, batch, -1).double()
    se = grads.std(0) / math.sqrt(reps)
    z_scores = (grads.mean(0) - expected) / se
    assert expected.abs().max() > 1  # the proposal is far enough from p(z|x) for the gradient to matter
    assert z_scores.abs().max() < 4.5, z_scores
    assert (z_scores**2).mean() < 2  # ~1 for a correct gradient (40 z-scores)
