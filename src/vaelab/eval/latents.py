"""The latent space of VAEs: which units are used, how much each carries, the bound on log p(x); and the
reconstruction error of every model that reconstructs. Registered for the model types here.

    active units     Burda et al. 2015: unit u is active when Cov_x(E_q[z_u]) > 0.01 (for a prior other than N(0, I)
                     the variance is measured in units of the prior's: Var_x(E_q[z_u]) / Var_p(z_u) > 0.01)
    KL per unit      E_x KL(q(z_u|x) || p(z_u)): closed form when q and p factorize over the units (a diagonal q,
                     the standard or learned prior), else a Monte Carlo estimate with the prior's marginal p(z_u)
    mse              squared error of the reconstruction mean, per pixel
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import MixtureSameFamily, Normal, kl_divergence

from vaelab.data import Dataset
from vaelab.eval.registry import BATCH_METRICS, LOG_LIKELIHOOD, SPLIT_METRICS
from vaelab.models import LikelihoodModel
from vaelab.models.annealed_vae import AnnealedVAE
from vaelab.models.betavae import BetaVAE
from vaelab.models.linear_gaussian import LinearGaussian
from vaelab.models.vae import VAE
from vaelab.probability import closed_form_kl, factorized, unit_normals
from vaelab.training.hooks import EPOCH_METRICS

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: a unit is active when Cov_x(E_q[z_u]) > 0.01
COLLAPSE_FRACTION = 0.5  # fewer active units than this share of the latent: the posterior has collapsed
EPOCH_BATCH = 500  # validation points the per-epoch KL per unit is measured on (the first ones: a fixed batch)
KL_SAMPLES = 64  # draws of the Monte Carlo KL per unit, per data point
KL_CHUNK = 2**22  # component densities (draws x points x units x mixture components) held at once by that estimate


def active_units(posterior_means: Tensor, threshold: float = ACTIVE_THRESHOLD, prior_variance: Tensor | None = None):
    """Number of latent units whose posterior mean varies across data: Var_x(E_q[z_u]) (/ Var_p(z_u)) > threshold."""
    variance = posterior_means.float().var(dim=0)
    if prior_variance is not None:
        variance = variance / prior_variance.float().to(variance.device)
    return int((variance > threshold).sum())


@torch.no_grad()
def kl_per_unit(model: VAE, x: Tensor) -> Tensor | None:
    """E_x KL(q(z_u|x) || p(z_u)) for each unit u of a one-layer VAE's latent, over the batch x: (D,) nats; None
    with two stochastic layers (no per-unit posterior)."""
    marginals = model.prior_marginals()
    if marginals is None:
        return None
    q = model.encode(x)
    q_units, p_units = factorized(q), factorized(model.prior())
    if q_units is not None and p_units is not None:
        return kl_divergence(q_units, p_units).mean(0)
    units = unit_normals(q)  # (B, D): the posterior's marginals
    exact = closed_form_kl(units, marginals)  # Gaussian marginals (a full-covariance q, a Gaussian prior)
    if exact is not None:
        return exact.mean(0)
    # a mixture prior: Monte Carlo, in slices of points whose (S, b, D, K) component densities stay small
    mixed = marginals.component_distribution.batch_shape[-1] if isinstance(marginals, MixtureSameFamily) else 1
    rows = max(1, KL_CHUNK // (KL_SAMPLES * units.loc.shape[-1] * mixed))
    total = units.loc.new_zeros(units.loc.shape[-1])
    for start in range(0, len(units.loc), rows):
        part = Normal(units.loc[start : start + rows], units.scale[start : start + rows], validate_args=False)
        z = part.sample((KL_SAMPLES,))  # (S, b, D)
        total += (part.log_prob(z) - marginals.log_prob(z)).mean(0).sum(0)
    return total / len(units.loc)


@SPLIT_METRICS.register(VAE)
@torch.no_grad()
def latent_statistics(model: VAE, data: Dataset, split: str, batch_size: int) -> dict[str, Any]:
    means, kls, n = [], [], 0
    for x in data.eval_batches(split, batch_size):
        means.append(model.code(x))
        kl = kl_per_unit(model, x)
        if kl is not None:
            kls.append(kl * len(x))
        n += len(x)
    codes = torch.cat(means)
    marginals = model.prior_marginals()
    variance = None if marginals is None else marginals.variance
    active = active_units(codes, prior_variance=variance)
    out: dict[str, Any] = {
        "latent_dim": codes.shape[1],
        "active_units": active,
        "posterior_collapsed": active < COLLAPSE_FRACTION * codes.shape[1],  # most units carry nothing about x
    }
    if kls:
        out["kl_per_dim"] = (torch.stack(kls).sum(0) / n).tolist()
    return out


@BATCH_METRICS.register(LikelihoodModel)
@torch.no_grad()
def reconstruction_error(model: LikelihoodModel, x: Tensor) -> dict[str, Tensor]:
    return {"mse": ((model.reconstruct(x) - x) ** 2).flatten(1).mean(1).mean()}


@LOG_LIKELIHOOD.register(VAE)
def vae_log_likelihood(model: VAE, x: Tensor, samples: int) -> Tensor:
    return model.log_likelihood(x, samples)


BATCH_METRICS.register(LinearGaussian)(reconstruction_error)


@LOG_LIKELIHOOD.register(LinearGaussian)
@torch.no_grad()
def exact_log_likelihood(model: LinearGaussian, x: Tensor, samples: int) -> Tensor:
    """The exact log p(x) of a linear-Gaussian model (``samples`` is not needed)."""
    return model.log_marginal(x)


@EPOCH_METRICS.register(BetaVAE)
@torch.no_grad()
def kl_per_unit_epoch(model: BetaVAE, data: Dataset, step: int) -> dict[str, Any]:
    x = data.head("val" if data.size("val") else "test", EPOCH_BATCH)
    kl = kl_per_unit(model, x)
    return {} if kl is None else {"kl_per_unit": [float(v) for v in kl], "kl_total": float(kl.sum())}


@EPOCH_METRICS.register(AnnealedVAE)
def capacity_epoch(model: AnnealedVAE, data: Dataset, step: int) -> dict[str, Any]:
    return {"capacity": model.capacity(step)}
