"""β-VAE (Higgins et al. 2017): the VAE objective with the KL weighted by β > 1, pressing q(z|x) towards the
factorised prior so that each latent unit tends to follow one generative factor.

    loss = -E_q(z|x)[log p(x|z)] + β KL(q(z|x) || p(z))

The paper's architectures are backbone options, not code here (see the ``betavae-*`` presets): the MLP 1200-1200
(``backbone=mlp, hidden=1200,1200``) and the dSprites conv net, four 4x4 stride-2 convolutions with 32, 32, 64, 64
channels, then a fully connected layer of 256 and a 10-unit code, the decoder its mirror
(``backbone=conv, channels=32,32,64,64, conv_hidden=256, latent_dim=10``).

The β-VAE family (this model, ``annealed-vae``, ``beta-tcvae``, ``factor-vae``) also logs the KL of each latent unit
once per epoch (``kl_per_unit`` in metrics.jsonl, split "epoch", registered in ``vaelab.eval.latents``) and draws
latent traversals after training (``vaelab.viz.traversals``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vaelab.models.base import MODELS
from vaelab.models.vae import VAE, VAEConfig


@dataclass(frozen=True)
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0  # weight of the KL term (Higgins et al.: 4 on dSprites); beta <= 0 is refused


@MODELS.register("beta-vae", "beta-VAE (Higgins 2017): Bernoulli VAE with the KL weighted by beta (default 4)")
class BetaVAE(VAE):
    Config = BetaVAEConfig
