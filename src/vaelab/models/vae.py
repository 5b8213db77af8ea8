"""Variational autoencoder (Kingma & Welling 2014) with a beta weight (Higgins et al. 2017).

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    loss    = -(1/L) sum_l log p(x|z_l) + beta * KL,     z_l = mu + sigma * eps_l   (SGVB, L samples)

The KL is closed-form (``kl_divergence``); the expectation is a Monte Carlo average over L draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from vaelab.errors import VaelabError
from vaelab.models.base import MODELS, Loss, Model, ModelConfig
from vaelab.nets import build_encoder
from vaelab.probability import POSTERIORS, importance_weighted_bound, standard_normal


@dataclass
class VAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL term; 1 gives the ELBO
    mc_samples: int = 1  # L, Monte Carlo samples of z per data point
    kl_warmup_steps: int = 0  # the KL weight rises linearly from 0 to beta over this many steps
    posterior: str = "diagonal"

    def __post_init__(self) -> None:
        super().__post_init__()
        POSTERIORS.get(self.posterior)
        if not self.beta > 0:
            raise VaelabError(f"beta must be > 0, got {self.beta}")
        if self.mc_samples < 1:
            raise VaelabError(f"mc_samples must be >= 1, got {self.mc_samples}")
        if self.kl_warmup_steps < 0:
            raise VaelabError(f"kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")


@MODELS.register("vae", "variational autoencoder: Gaussian q(z|x), N(0, I) prior, ELBO with beta and L samples")
class VAE(Model):
    Config = VAEConfig
    generative = True
    config: VAEConfig

    def __init__(self, config: VAEConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__(config, data_shape)
        self.posterior = POSTERIORS.get(config.posterior)(config.latent_dim)
        self.encoder = build_encoder(config, self.data_shape, self.posterior.num_params)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows the model's device

    def prior(self) -> Distribution:
        return standard_normal(self.config.latent_dim, self._anchor.device)

    def encode(self, x: Tensor) -> Distribution:
        return self.posterior(self.encoder(x))

    def code(self, x: Tensor) -> Tensor:
        return self.encode(x).mean

    def kl_weight(self, step: int | None) -> float:
        warmup = self.config.kl_warmup_steps
        ramp = 1.0 if step is None or warmup == 0 else min(1.0, step / warmup)
        return self.config.beta * ramp

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        q = self.encode(x)
        z = q.rsample((self.config.mc_samples,))  # (L, B, D)
        reconstruction = -self.decode(z).log_prob(x).mean()
        kl = kl_divergence(q, self.prior()).mean()
        total = reconstruction + self.kl_weight(step) * kl
        return Loss(total, {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)})

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Means of p(x|z) for n draws z ~ p(z)."""
        return self.decode(self.prior().sample((n,))).mean

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, samples: int = 1000) -> Tensor:
        """The importance-weighted estimate of log p(x) per data point (a lower bound; K = samples)."""
        return importance_weighted_bound(x, self.encode(x), self.prior(), self.decode, samples)
