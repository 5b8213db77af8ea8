"""Encoder heads q(z|x) and the prior p(z), as torch.distributions objects.

A posterior head says how many numbers the encoder must output for a latent of size D and turns
them into a distribution with ``rsample`` (the reparameterization z = mu + sigma * eps) and a
closed-form ``kl_divergence`` to the prior: a diagonal Gaussian, or a full-covariance Gaussian N(mu, L L^T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence, register_kl

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry

#: smallest posterior standard deviation; keeps log q finite when the encoder saturates
MIN_SCALE = 1e-4
#: most encoder outputs a full-covariance head may ask for per data point, D + D(D+1)/2 (latent_dim <= 360): the
#: head's last layer holds hidden x that many weights, and a batch of 500 holds 500 dense D x D factors L(x)
FULL_COVARIANCE_BUDGET = 2**16


class Posterior(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.check(latent_dim)
        self.latent_dim = latent_dim

    @classmethod
    def check(cls, latent_dim: int, key: str = "latent_dim") -> None:
        """Refuse a latent size this family cannot hold (called when a config is validated; ``key`` names it)."""

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def forward(self, h: Tensor) -> Distribution:
        raise NotImplementedError

    def params_of(self, q: Distribution) -> Tensor:
        """The head's inputs h (..., num_params) with ``self(h)`` equal to the Gaussian q (a q of this family, or a
        narrower one): where a per-point optimization of q starts from the encoder's q."""
        raise NotImplementedError


POSTERIORS: Registry[type[Posterior]] = Registry("posterior")


@POSTERIORS.register("diagonal", "Gaussian with diagonal covariance, N(mu(x), diag sigma(x)^2)")
class DiagonalGaussian(Posterior):
    """sigma = softplus(raw) + MIN_SCALE: smooth, positive, and never exploding like exp(raw)."""

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, h: Tensor) -> Distribution:
        mu, raw = _full_precision(h).chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(raw) + MIN_SCALE, validate_args=False), 1, validate_args=False)

    def params_of(self, q: Distribution) -> Tensor:
        """[mu, softplus^-1(sigma - MIN_SCALE)] of a diagonal Gaussian q."""
        mu, sigma = _diagonal(q)
        return torch.cat([mu, inverse_softplus(sigma - MIN_SCALE)], -1)


@POSTERIORS.register(
    "log-variance", "diagonal Gaussian, the encoder giving log sigma(x)^2 (as pythae and most VAE code)"
)
class LogVarianceGaussian(Posterior):
    """sigma = exp(raw / 2): the diagonal Gaussian of pythae, Kingma & Welling's code and most VAE code since.

    The same family as ``diagonal``, another coordinate for its scale: a step in raw moves log sigma by half of it,
    at any sigma, where softplus's steps shrink as sigma grows. Nothing bounds sigma away from 0 or infinity but the
    encoder's outputs (exp(raw / 2) underflows to 0 below raw = -200 in float32).
    """

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, h: Tensor) -> Distribution:
        mu, log_var = _full_precision(h).chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1, validate_args=False)

    def params_of(self, q: Distribution) -> Tensor:
        """[mu, log sigma^2] of a diagonal Gaussian q."""
        mu, sigma = _diagonal(q)
        return torch.cat([mu, 2 * torch.log(sigma)], -1)


@POSTERIORS.register("full", "Gaussian with full covariance, N(mu(x), L(x) L(x)^T), L lower-triangular")
class FullCovarianceGaussian(Posterior):
    """z = mu + L eps, so the latent units can be correlated (a diagonal q cannot tilt its ellipse).

    The encoder outputs mu (D), L's diagonal raw (D) and its strict lower triangle (D(D-1)/2). The diagonal is
    softplus(raw) + MIN_SCALE > 0, which makes L a Cholesky factor: log|Sigma| = 2 sum log L_ii stays cheap.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @classmethod
    def check(cls, latent_dim: int, key: str = "latent_dim") -> None:
        need = latent_dim * (latent_dim + 3) // 2
        if need > FULL_COVARIANCE_BUDGET:
            largest = max(d for d in range(1, latent_dim) if d * (d + 3) // 2 <= FULL_COVARIANCE_BUDGET)
            raise VaelabError(
                f"posterior=full with {key}={latent_dim} needs {need} encoder outputs per data point for mu and "
                f"L(x), over the memory budget of {FULL_COVARIANCE_BUDGET} ({key} <= {largest}); "
                f"use a smaller {key} or posterior=diagonal"
            )

    @property
    def num_params(self) -> int:
        d = self.latent_dim
        return d * (d + 3) // 2

    def forward(self, h: Tensor) -> Distribution:
        d = self.latent_dim
        mu, raw, lower = _full_precision(h).split([d, d, d * (d - 1) // 2], dim=-1)
        scale_tril = torch.diag_embed(F.softplus(raw) + MIN_SCALE)
        scale_tril[..., self.rows, self.cols] = lower
        return MultivariateNormal(mu, scale_tril=scale_tril, validate_args=False)

    def params_of(self, q: Distribution) -> Tensor:
        """[mu, softplus^-1(L_ii - MIN_SCALE), L's strict lower triangle] of a full (or diagonal) Gaussian q."""
        if isinstance(q, MultivariateNormal):
            tril = q.scale_tril
        elif isinstance(q, Independent) and isinstance(q.base_dist, Normal):
            tril = torch.diag_embed(q.base_dist.scale)
        else:
            raise VaelabError(f"a full-covariance Gaussian head cannot hold a {type(q).__name__}")
        diagonal = inverse_softplus(tril.diagonal(dim1=-2, dim2=-1) - MIN_SCALE)
        return torch.cat([q.mean, diagonal, tril[..., self.rows, self.cols]], -1)


@register_kl(MultivariateNormal, Independent)
def _kl_full_diagonal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(N(mu, L L^T) || N(m, diag s^2)), e.g. to the prior: the diagonal Gaussian as a MultivariateNormal."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    return kl_divergence(q, MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale)))


def _diagonal(q: Distribution) -> tuple[Tensor, Tensor]:
    """mu and sigma of a diagonal Gaussian q, for a diagonal head's ``params_of``; any other q is refused."""
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
        raise VaelabError(f"a diagonal Gaussian head cannot hold a {type(q).__name__}")
    return q.base_dist.loc, q.base_dist.scale


def inverse_softplus(y: Tensor) -> Tensor:
    """x with softplus(x) = y, for y > 0 (stable for large y; y is kept above 1e-30)."""
    y = y.clamp(min=1e-30)
    return y + torch.log(-torch.expm1(-y))


def _full_precision(h: Tensor) -> Tensor:
    """Encoder outputs in float32 at least (half-precision outputs under autocast are raised; float64 is kept)."""
    return h if h.dtype == torch.float64 else h.float()


def standard_normal(latent_dim: int, device: torch.device | str | None = None) -> Distribution:
    """The prior p(z) = N(0, I) over a latent vector."""
    zeros = torch.zeros(latent_dim, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)
