"""Gradient estimators: the score function is unbiased (it agrees with the exact gradient and with the
reparameterization gradient within Monte Carlo error) and has a much larger variance; a baseline lowers it.

f(z) = ||z||^2 has E_q f = ||mu||^2 + sum sigma^2 (diagonal) or ||mu||^2 + ||L||_F^2 (full), so the exact gradient
is known. Per-copy gradients (the head input repeated, one leaf per copy, one draw each) give standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.core.errors import VaelabError
from vaelab.eval.gradient_variance import gradient_stats, mean_squared_z
from vaelab.models import build_model
from vaelab.probability import ESTIMATORS
from vaelab.probability.estimators import leave_one_out_mean, score_function
from vaelab.probability.posteriors import DiagonalGaussian, FullCovarianceGaussian


def head_input(kind: str, batch: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.rand(batch, d, generator=g) - 1.5
    raw = 2 * torch.rand(batch, d, generator=g) - 1
    parts = [mu, raw] + ([0.5 * torch.randn(batch, d * (d - 1) // 2, generator=g)] if kind == "full" else [])
    return torch.cat(parts, dim=-1)


HEADS = {"diagonal": DiagonalGaussian, "full": FullCovarianceGaussian}


def exact_gradient(kind: str, h: torch.Tensor, d: int) -> torch.Tensor:
    """d/dh of E||z||^2, with autograd through the closed form ||mu||^2 + ||scale||_F^2 (no sampling)."""
    h = h.detach().clone().requires_grad_(True)
    q = HEADS[kind](d)(h)
    scale = q.stddev if kind == "diagonal" else q.scale_tril
    ((q.mean**2).sum() + (scale**2).sum()).backward()
    return h.grad.double()


def per_copy_gradients(kind: str, estimator: str, h: torch.Tensor, d: int, reps: int, samples: int, baseline: bool):
    h_rep = h.repeat(reps, 1).requires_grad_(True)
    q = HEADS[kind](d)(h_rep)
    values = ESTIMATORS.get(estimator)(q, lambda z: (z**2).sum(-1), samples, baseline)  # (L, reps * B)
    values.mean(0).sum().backward()
    return h_rep.grad.view(reps, *h.shape).double()


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_score_function_is_unbiased_and_noisier(kind):
    d, batch, reps = 3, 4, 20_000
    h = head_input(kind, batch, d, seed=0)
    exact = exact_gradient(kind, h, d)
    assert exact.abs().max() > 1
    variances = {}
    for estimator, samples, baseline in (
        ("reparameterization", 1, False),
        ("score-function", 1, False),
        ("score-function", 4, True),
    ):
        torch.manual_seed(1)
        grads = per_copy_gradients(kind, estimator, h, d, reps, samples, baseline)
        se = grads.std(0) / math.sqrt(reps)
        z_scores = (grads.mean(0) - exact) / se
        assert z_scores.abs().max() < 4.5, (estimator, z_scores)
        assert (z_scores**2).mean() < 2, (estimator, z_scores)  # ~1 when unbiased
        variances[(estimator, baseline)] = grads.var(0).sum().item()
    reparam = variances[("reparameterization", False)]
    score = variances[("score-function", False)]
    assert score > 10 * reparam, variances  # the seeds' claim, as a number
    assert variances[("score-function", True)] < score / 3, variances  # L = 4 with a leave-one-out baseline


def test_estimator_values_are_f_of_the_draws():
    """Whatever the estimator, the loss reports f(z) itself: the surrogate term adds zero to the value."""
    q = DiagonalGaussian(2)(head_input("diagonal", 3, 2, seed=2).requires_grad_(True))
    torch.manual_seed(3)
    values = score_function(q, lambda z: (z**2).sum(-1), 5, baseline=True)
    torch.manual_seed(3)
    z = q.sample((5,))
    torch.testing.assert_close(values, (z**2).sum(-1))
    assert values.requires_grad


def test_leave_one_out_mean():
    v = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])
    expected = torch.tensor([[4.0, 40.0], [3.5, 35.0], [1.5, 15.0]])
    torch.testing.assert_close(leave_one_out_mean(v), expected)


def test_score_function_on_the_vae_agrees_with_reparameterization():
    """On a VAE, same batch: the two estimators' mean gradients agree (mean squared z-score ~1 over ~600 elements),
    the encoder's gradient variance is far larger under the score function and the decoder's is the same."""
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(12,), mc_samples=2)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)).round()
    torch.manual_seed(2)
    reparam = gradient_stats(model, x, 400, gradient_estimator="reparameterization")
    score = gradient_stats(model, x, 400, gradient_estimator="score-function")
    assert model.config.gradient_estimator == "reparameterization"  # restored
    assert reparam.label == "reparameterization" and score.label == "score-function"
    assert 0.6 < mean_squared_z(reparam, score) < 1.5
    encoder = [n for n in reparam.variance if n.startswith("encoder")]
    decoder = [n for n in reparam.variance if n.startswith("decoder")]
    assert score.total_variance(encoder) > 20 * reparam.total_variance(encoder)
    assert 0.7 < score.total_variance(decoder) / reparam.total_variance(decoder) < 1.4
    baseline = gradient_stats(model, x, 400, gradient_estimator="score-function", baseline=True)
    assert baseline.label == "score-function + baseline"
    assert baseline.total_variance(encoder) < score.total_variance(encoder) / 3
    assert mean_squared_z(reparam, baseline) < 1.5


def test_score_function_training_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model(
        "vae", (1, 8, 8), latent_dim=2, hidden=(16,), gradient_estimator="score-function", mc_samples=4, baseline=True
    )
    g = torch.Generator().manual_seed(1)
    prototypes = torch.rand(4, 1, 8, 8, generator=g).round()  # four patterns: a code can tell them apart
    x = prototypes[torch.randint(4, (64,), generator=g)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x).total.item()
    for _ in range(100):
        opt.zero_grad()
        model.loss(x).total.backward()
        opt.step()
    assert model.loss(x).total.item() < first - 15


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"gradient_estimator": "reinforce"}, ["reinforce", "score-function", "reparameterization"]),
        ({"baseline": True}, ["baseline", "score-function"]),
        ({"gradient_estimator": "score-function", "baseline": True, "mc_samples": 1}, ["mc_samples >= 2"]),
        ({"gradient_estimator": "score-function", "inner_latent_dim": 4}, ["closed-form KL", "inner_latent_dim=0"]),
        ({"free_bits": -0.5}, ["free_bits"]),
        ({"inner_latent_dim": -1}, ["inner_latent_dim"]),
    ],
)
def test_bad_estimator_options(options, words):
    with pytest.raises(VaelabError) as err:
        build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,), **options)
    for word in words:
        assert word in str(err.value), (options, str(err.value))


def test_gradient_stats_refuses_bad_input():
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(8,))
    x = torch.rand(4, 1, 8, 8).round()
    with pytest.raises(VaelabError, match="repeats"):
        gradient_stats(model, x, 1)
    with pytest.raises(VaelabError, match="mc_samples >= 2"):
        gradient_stats(model, x, 5, gradient_estimator="score-function", baseline=True)
    assert model.config.baseline is False
    ae = build_model("ae", (1, 8, 8), latent_dim=2, hidden=(8,))
    with pytest.raises(VaelabError, match=r"samples no latent z; it needs a run of: .*vae"):
        gradient_stats(ae, x, 5, gradient_estimator="score-function")
