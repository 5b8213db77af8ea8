"""FactorVAE (Kim & Mnih 2018, "Disentangling by factorising"): the ELBO plus γ times the total correlation of
the aggregate posterior, estimated with a discriminator by the density-ratio trick.

    TC(z) = KL(q(z) || prod_j q(z_j)) ~ E_q(z) [ log D(z) / (1 - D(z)) ] = E [ logit_0(z) - logit_1(z) ]
    loss  = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + γ TC

D is an MLP over codes (6 layers of 1000 leaky-ReLU units in the paper and in disentanglement_lib) that tells draws
z ~ q(z|x) of the batch (class 0) from draws of prod_j q(z_j) (class 1), made by permuting each unit of the batch's
draws independently across the batch. It is trained with its own learning rate and Adam betas (the paper's 1e-4
and (0.5, 0.9)): ``param_groups`` gives it a group of its own, which the trainer and its checkpoint honour.

One backward pass trains both, with their gradients kept apart: the VAE's γ TC term reads D's logits through a
detached copy of D's parameters (D is not trained to help the VAE), and D's cross-entropy reads detached codes (the
encoder is not trained to help D). As in disentanglement_lib's ``FactorVAE``, the real and the permuted codes come
from the same batch. The terms ``tc`` (the density-ratio estimate) and ``discriminator`` (D's cross-entropy, ln 2
at chance) are logged; ``elbo`` stays the ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.func import functional_call

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec
from vaelab.models.betavae import BetaVAE
from vaelab.models.vae import VAEConfig


@dataclass(frozen=True)
class FactorVAEConfig(VAEConfig):
    beta: float = 1.0  # the KL keeps weight 1: FactorVAE penalizes the total correlation alone
    gamma: float = 35.0  # γ, the weight of the total correlation (Kim & Mnih: 35 on dSprites)
    discriminator_hidden: tuple[int, ...] = (1000, 1000, 1000, 1000, 1000, 1000)
    discriminator_lr: float = 1e-4
    discriminator_betas: tuple[float, ...] = (0.5, 0.9)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.gamma >= 0:
            raise VaelabError(f"gamma (γ, the weight of the total correlation) must be >= 0, got {self.gamma}")
        if not self.discriminator_lr > 0:
            raise VaelabError(f"discriminator_lr must be > 0, got {self.discriminator_lr}")
        if len(self.discriminator_betas) != 2 or not all(0 <= b < 1 for b in self.discriminator_betas):
            raise VaelabError(f"discriminator_betas must be two numbers in [0, 1), got {self.discriminator_betas}")
        if any(w < 1 for w in self.discriminator_hidden) or not self.discriminator_hidden:
            raise VaelabError(f"discriminator_hidden must be positive widths, got {self.discriminator_hidden}")
        if self.inner_latent_dim or self.gradient_estimator != "reparameterization":
            raise VaelabError(
                "factor-vae needs one stochastic layer and the reparameterization estimator "
                "(inner_latent_dim=0, gradient_estimator=reparameterization)"
            )


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each column of z (B, D) permuted independently across the batch: draws of prod_j q(z_j)."""
    b, d = z.shape
    order = torch.rand(b, d, device=z.device, generator=generator).argsort(0)
    return z.gather(0, order)


def discriminator(latent_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """The MLP D: z -> two logits (z from q(z), z from prod_j q(z_j)), leaky ReLU(0.2) between the layers."""
    layers: list[nn.Module] = []
    for a, b in zip((latent_dim, *hidden[:-1]), hidden):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], 2))


@MODELS.register(
    "factor-vae", "FactorVAE (Kim & Mnih 2018): ELBO + gamma TC, TC by a discriminator (own optimizer group)"
)
class FactorVAE(BetaVAE):
    Config = FactorVAEConfig
    config: FactorVAEConfig

    def __init__(self, config: FactorVAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        self.discriminator = discriminator(config.latent_dim, config.discriminator_hidden)

    def param_groups(self, lr: float) -> list[dict]:
        own = {id(p) for p in self.discriminator.parameters()}
        vae = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        cfg = self.config
        d = {"params": list(self.discriminator.parameters()), "lr": cfg.discriminator_lr}
        return [{"params": vae}, {**d, "betas": tuple(cfg.discriminator_betas)}]

    def total_correlation(self, z: Tensor) -> Tensor:
        """The density-ratio estimate of TC at draws z (B, D), through D with its parameters detached."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (z,))
        return (logits[:, 0] - logits[:, 1]).mean()

    def discriminator_loss(self, z: Tensor) -> Tensor:
        """D's cross-entropy on detached draws of q(z) (class 0) and of prod_j q(z_j) (class 1)."""
        z = z.detach()
        logits = self.discriminator(torch.cat([z, permute_dims(z)]))
        labels = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        return F.cross_entropy(logits, labels)

    def regularizer(
        self, q: Distribution, p: Distribution, kl: Tensor, step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        z = q.rsample()
        tc = self.total_correlation(z)
        d_loss = self.discriminator_loss(z)
        penalty = self.kl_weight(step) * self.kl_penalty(q, p, kl) + self.config.gamma * tc + d_loss
        return penalty, {"tc": tc, "discriminator": d_loss}
