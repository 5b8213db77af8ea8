"""Importance-weighted autoencoder (Burda et al. 2015): the VAE's networks, trained on the K-sample bound.

    L_K(x) = E[ log (1/K) sum_k w_k ],   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),   K = mc_samples

L_1 is the ELBO and L_K rises towards log p(x) with K. Its gradient weights each draw's d log w_k by its normalized
weight w_k / sum_j w_j, so q is no longer punished for mass where p(z|x) is small: it may spread, and more latent
units stay active. With KL warm-up or beta the weight multiplies log p(z_k) - log q(z_k|x) inside w_k.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, Loss
from vaelab.models.vae import VAE, VAEConfig
from vaelab.probability import importance_log_weights, log_mean_exp


@dataclass(frozen=True)
class IWAEConfig(VAEConfig):
    mc_samples: int = 5  # K, importance samples per data point in the training bound

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gradient_estimator != "reparameterization":
            raise VaelabError("iwae trains with gradient_estimator=reparameterization only")
        if self.free_bits:
            raise VaelabError("free_bits does not apply to iwae: its bound has no separate KL term")


@MODELS.register("iwae", "importance-weighted autoencoder: the VAE trained on the K-sample bound (K = mc_samples)")
class IWAE(VAE):
    Config = IWAEConfig
    config: IWAEConfig

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        log_px_z, log_ratio = importance_log_weights(
            x, self.encode(x), self.prior(), self.decode, self.config.mc_samples
        )
        bound = log_mean_exp(log_px_z + log_ratio).mean()
        total = -log_mean_exp(log_px_z + self.kl_weight(step) * log_ratio).mean()
        reconstruction, kl = -log_px_z.mean(), -log_ratio.mean()  # the ELBO's parts, from the same K draws
        return Loss(
            total, {"iwae_k": bound, "reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}
        )
