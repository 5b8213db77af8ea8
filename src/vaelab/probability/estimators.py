"""Gradient estimators of d/dphi E_q(z|x)[f(z)], the expectation in the ELBO (f(z) = log p(x|z)).

    reparameterization   z = mu + L eps:  the gradient flows through z           E_eps[ d f(mu + L eps) / dphi ]
    score-function       REINFORCE:       z is sampled, log q is differentiated   E_q[ (f(z) - b) d log q(z) / dphi ]

Both are unbiased (E_q[d log q / dphi] = 0 makes any b that does not depend on z harmless). The score-function
estimator needs no rsample, but f(z) - b multiplies a noisy score, so its variance is far larger.

An estimator returns the L draws' values f(z_l), shape (L, B), built so that ``.backward()`` on them gives the
estimator's gradient: the loss reports honest numbers whichever estimator trains it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.distributions import Distribution

from vaelab.core.registry import Registry

Estimator = Callable[[Distribution, Callable[[Tensor], Tensor], int, bool], Tensor]

#: name -> estimator(q, f, samples, baseline) -> f(z) of shape (samples, B), carrying the estimator's gradient
ESTIMATORS: Registry[Estimator] = Registry("gradient estimator")


@ESTIMATORS.register("reparameterization", "pathwise gradient through z = mu + L eps (low variance; the default)")
def reparameterization(q: Distribution, f: Callable[[Tensor], Tensor], samples: int, baseline: bool = False) -> Tensor:
    return f(q.rsample((samples,)))


@ESTIMATORS.register("score-function", "REINFORCE, (f(z) - b) grad log q(z): unbiased but high-variance")
def score_function(q: Distribution, f: Callable[[Tensor], Tensor], samples: int, baseline: bool = False) -> Tensor:
    """f(z) + (f(z) - b) (log q(z) - log q(z)): the value is f(z); the gradient adds (f(z) - b) d log q(z).

    f is still differentiated in its own parameters (the decoder's gradient is the usual one); only the path from
    phi through z is replaced by the score. ``baseline`` takes b_l = the mean of the other L - 1 draws' f.
    """
    z = q.sample((samples,))
    value = f(z)
    signal = value.detach()
    if baseline:
        signal = signal - leave_one_out_mean(signal)
    log_q = q.log_prob(z)
    return value + signal * (log_q - log_q.detach())


def leave_one_out_mean(values: Tensor) -> Tensor:
    """For each draw l of values (L, B), the mean over the other draws: independent of z_l, so the baseline adds no
    bias, and it follows each data point's own scale of f."""
    n = values.shape[0]
    return (values.sum(0, keepdim=True) - values) / (n - 1)
