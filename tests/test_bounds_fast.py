"""The fast routes of the K-sample evaluation compute the plain routes' numbers: the summed Bernoulli
log-likelihood against torch's, the tiled bound against the plain one on the same draws (two stochastic layers too),
the cache-fitted tile size from /sys, and one line when one data point does not fit the memory budget."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent

from vaelab.core.errors import VaelabError
from vaelab.models import build_model
from vaelab.probability import bounds, importance_log_weights, importance_weighted_bound, log_mean_exp
from vaelab.probability.likelihoods import BernoulliLikelihood, BernoulliPixels


class Replay:
    """A posterior whose rsample hands out a fixed bank of draws in order."""

    def __init__(self, q, bank: torch.Tensor) -> None:
        self.q, self.bank, self.used = q, bank, 0

    def rsample(self, shape):
        z = self.bank[self.used : self.used + shape[0]]
        self.used += shape[0]
        return z

    def log_prob(self, z):
        return self.q.log_prob(z)


def test_bernoulli_pixels_is_torchs_bernoulli():
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 1, 6, 6) * 6).requires_grad_()
    for x in ((torch.rand(5, 1, 6, 6) < 0.4).float(), torch.rand(5, 1, 6, 6), torch.rand(3, 5, 1, 6, 6)):
        fast = BernoulliLikelihood((1, 6, 6))(logits)
        assert isinstance(fast, BernoulliPixels) and isinstance(fast.base_dist, Bernoulli)
        plain = Independent(Bernoulli(logits=logits, validate_args=False), 3)
        a, b = fast.log_prob(x), plain.log_prob(x)
        assert a.shape == b.shape == (3, 5)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-6)
        (ga,) = torch.autograd.grad(a.sum(), logits)
        (gb,) = torch.autograd.grad(b.sum(), logits)
        torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)
    assert fast.event_shape == (1, 6, 6) and fast.batch_shape == (3, 5)


@pytest.mark.parametrize("inner", [0, 3])
@torch.no_grad()
def test_tiled_bound_equals_the_plain_route_on_the_same_draws(inner):
    torch.manual_seed(1)
    model = build_model("vae", (1, 8, 8), latent_dim=4, hidden=(32,), inner_latent_dim=inner, inner_hidden=(16,))
    x = (torch.rand(13, 1, 8, 8) < 0.5).float()
    q, p = model.encode(x), model.prior()
    k = 37
    bank = q.sample((k,))
    a, b = importance_log_weights(x, Replay(q, bank), p, model.decode, k)
    plain = log_mean_exp(a + b)
    for chunk in (64, 64 * 5, 64 * 13 * 3, 10**8):  # one row; 5 points; 3 samples of all points; one tile
        replay = Replay(q, bank)
        torch.testing.assert_close(importance_weighted_bound(x, replay, p, model.decode, k, chunk=chunk), plain)
        assert replay.used == k
    old_rows = bounds.DRAW_ROWS
    try:  # draws in many small groups: the running logsumexp over groups
        bounds.DRAW_ROWS = 1
        replay = Replay(q, bank)
        torch.testing.assert_close(importance_weighted_bound(x, replay, p, model.decode, k, chunk=64), plain)
        assert replay.used == k
    finally:
        bounds.DRAW_ROWS = old_rows


def test_a_point_over_the_memory_budget_is_one_line(monkeypatch):
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,))
    x = torch.rand(4, 1, 8, 8).round()
    q, p = model.encode(x), model.prior()
    with pytest.raises(VaelabError, match=r"1000 importance samples of one data point need 64,000 decoder outputs"):
        importance_weighted_bound(x, q, p, model.decode, 1000, budget=50_000)  # gradients on: all K are kept
    with pytest.raises(VaelabError, match="VAELAB_MEMORY_BUDGET=65536") as err:
        importance_log_weights(x, q, p, model.decode, 1000, budget=50_000)
    assert "\n" not in str(err.value) and "memory budget of 50,000" in str(err.value)
    with torch.no_grad():  # without gradients only one sample of one point must fit
        importance_weighted_bound(x, q, p, model.decode, 1000, budget=64)
        with pytest.raises(VaelabError, match="one sample of one point needs 64 decoder outputs"):
            importance_weighted_bound(x, q, p, model.decode, 10, budget=63)
    monkeypatch.setenv("VAELAB_MEMORY_BUDGET", "100")
    assert bounds.memory_budget() == 100
    with torch.no_grad(), pytest.raises(VaelabError, match=r"memory budget of 100 \(\$VAELAB_MEMORY_BUDGET\)"):
        importance_weighted_bound(torch.rand(2, 1, 16, 16).round(), q, p, lambda z: None, 10)


def test_chunk_fits_the_largest_cache(tmp_path, monkeypatch):
    def level(name, kind, size, shared):
        d = tmp_path / name
        d.mkdir()
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
        (d / "shared_cpu_list").write_text(shared + "\n")

    level("index0", "Data", "32K", "0")
    level("index1", "Instruction", "32K", "0")
    level("index2", "Unified", "1024K", "0")
    level("index3", "Unified", "4096K", "0-15")
    monkeypatch.setattr(bounds, "CACHE_ROOT", tmp_path)
    bounds.chunk_outputs.cache_clear()
    try:
        assert bounds.chunk_outputs() == 4 * 2**20 // 4 // 4  # a quarter of the L3, in float32
        (tmp_path / "index3" / "size").write_text("491520K\n")  # what a virtual machine reported: capped
        bounds.chunk_outputs.cache_clear()
        assert bounds.chunk_outputs() == bounds.MAX_CHUNK == 2**20
        monkeypatch.setattr(bounds, "CACHE_ROOT", tmp_path / "none")
        bounds.chunk_outputs.cache_clear()
        assert bounds.chunk_outputs() == bounds.FALLBACK_CHUNK
    finally:
        bounds.chunk_outputs.cache_clear()


def test_bernoulli_pixels_both_routes_agree():
    torch.manual_seed(2)
    logits = torch.randn(4, 7, 1, 5, 5) * 5
    x = torch.rand(7, 1, 5, 5).round()
    fast = BernoulliLikelihood((1, 5, 5))(logits)
    with torch.no_grad():
        no_grad = fast.log_prob(x)
    with_grad = BernoulliLikelihood((1, 5, 5))(logits.requires_grad_()).log_prob(x)
    assert with_grad.requires_grad and not no_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), no_grad, atol=1e-4, rtol=1e-6)


def test_kl_to_the_unit_gaussian_is_torchs_rule():
    from torch.distributions import Normal, kl_divergence
    from torch.distributions.kl import _kl_independent_independent

    from vaelab.probability.priors import PRIORS, UnitGaussian

    p = PRIORS.get("standard").build(5, 1, (1, 8, 8), None)()
    assert isinstance(p, UnitGaussian)
    torch.manual_seed(3)
    loc, scale = torch.randn(7, 5, requires_grad=True), (torch.rand(7, 5) + 0.05).requires_grad_()
    q = Independent(Normal(loc, scale), 1)
    fast, plain = kl_divergence(q, p), _kl_independent_independent(q, p)
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(
        torch.autograd.grad(fast.sum(), (loc, scale)), torch.autograd.grad(plain.sum(), (loc, scale))
    )


@torch.no_grad()
def test_an_empty_batch_has_an_empty_bound():
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,))
    x = torch.zeros(0, 1, 8, 8)
    assert importance_weighted_bound(x, model.encode(x), model.prior(), model.decode, 10).shape == (0,)
