"""Encoder heads q(z|x) and the prior p(z), as torch.distributions objects.

A posterior head says how many numbers the encoder must output for a latent of size D and turns
them into a distribution with ``rsample`` (the reparameterization z = mu + sigma * eps) and a
closed-form ``kl_divergence`` to the prior. A full-covariance head drops in beside this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vaelab.registry import Registry

#: smallest posterior standard deviation; keeps log q finite when the encoder saturates
MIN_SCALE = 1e-4


class Posterior(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def forward(self, h: Tensor) -> Distribution:
        raise NotImplementedError


POSTERIORS: Registry[type[Posterior]] = Registry("posterior")


@POSTERIORS.register("diagonal", "Gaussian with diagonal covariance, N(mu(x), diag sigma(x)^2)")
class DiagonalGaussian(Posterior):
    """sigma = softplus(raw) + MIN_SCALE: smooth, positive, and never exploding like exp(raw)."""

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, h: Tensor) -> Distribution:
        mu, raw = h.float().chunk(2, dim=-1)
        return Independent(Normal(mu, F.softplus(raw) + MIN_SCALE, validate_args=False), 1, validate_args=False)


def standard_normal(latent_dim: int, device: torch.device | str | None = None) -> Distribution:
    """The prior p(z) = N(0, I) over a latent vector."""
    zeros = torch.zeros(latent_dim, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)
