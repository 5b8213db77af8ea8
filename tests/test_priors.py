"""The prior registry: each prior's density by an independent route, the KL closed-form or Monte Carlo from the ELBO's
own draws, the per-unit marginals, free bits, active units and sampling read from the prior, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.eval import latents
from vaelab.eval.latents import active_units, kl_per_unit
from vaelab.models import build_model
from vaelab.probability import PRIORS, closed_form_kl, unit_normals
from vaelab.probability.priors import DiagonalMixture, LearnedGaussian, MixtureOfGaussians, StandardNormal, VampPrior
from vaelab.viz.latents import marginal_quantiles

SHAPE = (1, 6, 6)
NET = {"hidden": (16,), "latent_dim": 3}


def batch(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)).bernoulli()


def vae(prior: str, **options) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("vae", SHAPE, prior=prior, prior_components=4, **{**NET, **options})


def test_registry_names_and_closed_forms():
    assert PRIORS.names() == ["learned", "mog", "standard", "vamp"]
    assert [PRIORS.get(n).closed_form for n in ("standard", "learned", "mog", "vamp")] == [True, True, False, False]


def test_learned_prior_kl_is_closed_form_and_matches_monte_carlo():
    torch.manual_seed(0)
    prior = LearnedGaussian(3)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        prior.raw_scale.copy_(torch.tensor([0.2, 1.5, -0.3]))
    q = Independent(Normal(torch.randn(5, 3), torch.rand(5, 3) + 0.3), 1)
    p = prior()
    kl = closed_form_kl(q, p)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl, mc, atol=0.02, rtol=0.01)
    scale = F.softplus(prior.raw_scale) + 1e-4
    by_hand = (torch.log(scale / q.base_dist.scale) + (q.base_dist.scale**2 + (q.base_dist.loc - prior.loc) ** 2)
               / (2 * scale**2) - 0.5).sum(-1)  # fmt: skip
    torch.testing.assert_close(kl, by_hand.detach(), atol=1e-5, rtol=1e-5)


def test_mixture_densities_by_hand():
    torch.manual_seed(0)
    mog = MixtureOfGaussians(2, 3)
    z = torch.randn(7, 2)
    components = Normal(mog.locs, F.softplus(mog.raw_scales) + 1e-4)  # (K, D)
    log_w = torch.log_softmax(mog.logits, 0)
    by_hand = torch.logsumexp(log_w + components.log_prob(z[:, None]).sum(-1), dim=1)
    torch.testing.assert_close(mog().log_prob(z), by_hand)
    marg = mog.marginals()  # p(z_j) = sum_k w_k N(z_j; mu_kj, s_kj)
    by_unit = torch.logsumexp(log_w[:, None] + components.log_prob(z[:, None]), dim=1)
    torch.testing.assert_close(marg.log_prob(z), by_unit)


def test_the_diagonal_mixture_density_and_its_gradient_equal_torchs_mixture_in_float64():
    """The matrix-product route (DiagonalMixture) against torch's MixtureSameFamily over the (N, K, D) differences, in
    float64, with narrow components (sigma down to 1e-3) and points far from them; its gradient against autograd's
    through the plain route."""
    torch.manual_seed(0)
    loc = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    raw = (torch.rand(50, 6, dtype=torch.float64) * 3 - 7).requires_grad_()  # sigma from 1e-3 to 2e-2 ... e^-4
    logits = torch.randn(50, dtype=torch.float64, requires_grad=True)
    z = (torch.randn(4, 9, 6, dtype=torch.float64) * 2).requires_grad_()
    fast = DiagonalMixture(logits, loc, raw.exp()).log_prob(z)
    plain = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, raw.exp()), 1)).log_prob(z)
    assert fast.shape == (4, 9)
    torch.testing.assert_close(fast, plain, rtol=1e-9, atol=1e-7)
    for a, b in zip(
        torch.autograd.grad(fast.sum(), (loc, raw, logits, z)), torch.autograd.grad(plain.sum(), (loc, raw, logits, z))
    ):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    z32 = torch.randn(3, 6)  # float32 in, float32 out, close to the float64 value
    fast32 = DiagonalMixture(logits.float(), loc.float(), raw.exp().float()).log_prob(z32)
    assert fast32.dtype == torch.float32
    plain64 = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, raw.exp()), 1)).log_prob(
        z32.double()
    )
    torch.testing.assert_close(fast32.double(), plain64.detach(), rtol=1e-6, atol=1e-3)
    assert isinstance(MixtureOfGaussians(6, 5)(), DiagonalMixture)


def test_vamp_prior_is_the_mixture_of_the_posteriors_of_its_pseudo_inputs():
    model = vae("vamp")
    u = F.hardtanh(model.latent_prior.pseudo_inputs, 0, 1)  # Bernoulli data live in [0, 1]
    q = model.posterior_of(u)  # (K,) posteriors
    z = torch.randn(6, 3)
    by_hand = torch.logsumexp(q.log_prob(z[:, None]), dim=1) - math.log(4)
    torch.testing.assert_close(model.prior().log_prob(z), by_hand)
    assert model.latent_prior.pseudo_inputs.shape == (4, *SHAPE)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_kl_without_closed_form_is_estimated_from_the_elbos_own_draws(prior):
    model = vae(prior, mc_samples=3)
    x = batch()
    q, p = model.encode(x), model.prior()
    assert closed_form_kl(q, p) is None
    torch.manual_seed(5)
    loss = model.loss(x)
    torch.manual_seed(5)
    z = q.rsample((3,))  # the same three draws the loss took
    log_px_z = model.decode(z).log_prob(x)
    kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(loss.terms["kl"], kl.mean())
    torch.testing.assert_close(loss.terms["reconstruction"], -log_px_z.mean())
    # and the estimate is unbiased: its mean over many draws is the KL by brute-force Monte Carlo
    with torch.no_grad():
        brute = torch.stack([(q.log_prob(w) - p.log_prob(w)).mean() for w in q.sample((4000,))]).mean()
        estimates = torch.stack([model.loss(x).terms["kl"] for _ in range(300)]).mean()
    assert float(estimates) == pytest.approx(float(brute), rel=0.05, abs=0.02)


@pytest.mark.parametrize("prior", ["learned", "mog", "vamp"])
def test_the_prior_trains_with_the_model(prior):
    model = vae(prior)
    model.loss(batch()).total.backward()
    grads = [p.grad for p in model.latent_prior.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_standard_prior_has_no_parameters_and_is_the_old_prior():
    model = vae("standard")
    assert not list(model.latent_prior.parameters())
    p = StandardNormal(3)()
    torch.testing.assert_close(p.base_dist.loc, torch.zeros(3))
    torch.testing.assert_close(p.base_dist.scale, torch.ones(3))


def test_free_bits_are_per_unit_with_a_learned_prior_and_grouped_with_a_mixture():
    x = batch()
    learned = vae("learned", free_bits=0.5)
    q, p = learned.encode(x), learned.prior()
    per_unit = kl_divergence(q.base_dist, p.base_dist).mean(0).clamp(min=0.5).sum()
    torch.testing.assert_close(learned.kl_penalty(q, p, kl_divergence(q, p)), per_unit)
    mog = vae("mog", free_bits=0.5)
    kl = torch.full((8,), 0.2)
    assert float(mog.kl_penalty(mog.encode(x), mog.prior(), kl)) == pytest.approx(0.5 * 3)  # lambda * D


def test_active_units_and_kl_per_unit_read_the_prior(monkeypatch):
    means = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2], [3.0, 0.3]])  # variances 1.67 and 0.0167
    assert active_units(means) == 2
    assert active_units(means, prior_variance=torch.tensor([1.0, 4.0])) == 1  # 0.0167 / 4 < 0.01
    model = vae("mog")
    x = batch(64)
    kl = kl_per_unit(model, x)  # Monte Carlo, with the prior's marginals
    q = model.encode(x).base_dist
    marg = model.prior_marginals()
    z = q.sample((4000,))
    brute = (q.log_prob(z) - marg.log_prob(z)).mean((0, 1))
    torch.testing.assert_close(kl, brute, atol=0.05, rtol=0.05)
    monkeypatch.setattr(latents, "KL_CHUNK", 1)  # one point per slice: the same estimate
    torch.testing.assert_close(kl_per_unit(model, x), brute, atol=0.05, rtol=0.05)
    full = vae("standard", posterior="full")  # a full-covariance q: its marginals' KL to N(0, 1) in closed form
    q = unit_normals(full.encode(x))
    z = q.sample((4000,))
    brute = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).mean((0, 1))
    torch.testing.assert_close(kl_per_unit(full, x), brute, atol=0.02, rtol=0.02)


def test_sampling_and_traversals_read_the_prior():
    model = vae("learned")
    with torch.no_grad():
        model.latent_prior.loc.fill_(5.0)
        model.latent_prior.raw_scale.fill_(-20.0)  # sigma -> 1e-4: every draw sits at the mean
    z = model.prior().sample((4,))
    torch.testing.assert_close(z, torch.full((4, 3), 5.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(model.prior_marginals().stddev, torch.full((3,), 1e-4), atol=1e-6, rtol=1e-3)
    assert model.sample(4).shape == (4, *SHAPE)


def test_manifold_quantiles_come_from_the_prior():
    levels = torch.tensor([0.05, 0.5, 0.95])
    gauss = vae("standard").prior_marginals()
    torch.testing.assert_close(marginal_quantiles(gauss, levels)[:, 0], Normal(0.0, 1.0).icdf(levels))
    mix = vae("mog").prior_marginals()
    q = marginal_quantiles(mix, levels)  # empirical, from draws
    draws = mix.sample((200_000,))
    assert ((draws <= q[0]).float().mean(0) - 0.05).abs().max() < 0.01
    assert ((draws <= q[2]).float().mean(0) - 0.95).abs().max() < 0.01


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp"])
def test_iwae_bound_rises_towards_log_px_with_any_prior(prior):
    model = vae(prior).eval()
    x = batch(16)
    torch.manual_seed(0)
    bounds = [float(model.log_likelihood(x, k).mean()) for k in (1, 10, 200)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_bad_input():
    with pytest.raises(VaelabError, match="unknown prior 'gauss'; choose from: learned, mog, standard, vamp"):
        build_model("vae", SHAPE, prior="gauss")
    for prior in ("mog", "vamp"):
        with pytest.raises(VaelabError, match=r"prior_components \(K, the mixture's components\) must be >= 1, got 0"):
            build_model("vae", SHAPE, prior=prior, prior_components=0)
    with pytest.raises(VaelabError, match="score-function needs a closed-form KL, which prior=vamp has not"):
        build_model("vae", SHAPE, prior="vamp", gradient_estimator="score-function")
    with pytest.raises(VaelabError, match="prior=learned is a prior over one stochastic layer"):
        build_model("vae", SHAPE, prior="learned", inner_latent_dim=2)
    with pytest.raises(VaelabError, match="a prior needs latent_dim >= 1"):
        VampPrior(0, 3, SHAPE)
