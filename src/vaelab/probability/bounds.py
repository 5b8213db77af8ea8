"""The importance-weighted bound on log p(x) (Burda et al. 2015), batched over samples and data.

    log p(x) >= IWAE_K = log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)

IWAE_1 is the ELBO, and IWAE_K grows towards log p(x) as K grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.core.errors import VaelabError

#: default cap on decoder outputs held at once (elements); bounds memory for large K
DEFAULT_BUDGET = 2**25


def importance_log_weights(
    x: Tensor,
    posterior: Distribution,
    prior: Distribution,
    decode: Callable[[Tensor], Distribution],
    samples: int,
    budget: int = DEFAULT_BUDGET,
) -> tuple[Tensor, Tensor]:
    """The two parts of log w_k = log p(x|z_k) + [log p(z_k) - log q(z_k|x)], each (K, B), for K = samples.

    Batched over the K draws and the rows of x; drawn in chunks of K that keep ``budget`` decoder outputs in memory.
    """
    if samples < 1:
        raise VaelabError(f"the number of importance samples must be >= 1, got {samples}")
    per_sample = max(1, x.numel())  # elements of one sample of p(x|z) for the whole batch
    chunk = max(1, min(samples, budget // per_sample))
    log_px_z, log_ratio = [], []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        z = posterior.rsample((k,))  # (k, B, D); differentiable, so the bound can also be trained
        log_px_z.append(decode(z).log_prob(x.expand(k, *x.shape)))
        log_ratio.append(prior.log_prob(z) - posterior.log_prob(z))
    return torch.cat(log_px_z), torch.cat(log_ratio)


def log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k exp(log_w_k) over the first dimension, without overflow."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def importance_weighted_bound(
    x: Tensor,
    posterior: Distribution,
    prior: Distribution,
    decode: Callable[[Tensor], Distribution],
    samples: int,
    budget: int = DEFAULT_BUDGET,
) -> Tensor:
    """IWAE_K for each row of x, shape (B,). Samples are drawn in chunks of K that fit ``budget``."""
    log_px_z, log_ratio = importance_log_weights(x, posterior, prior, decode, samples, budget)
    return log_mean_exp(log_px_z + log_ratio)
