"""β-VAE (Higgins et al. 2017): the VAE objective with the KL weighted by β > 1, pressing q(z|x) towards the
factorised prior so that each latent unit tends to follow one generative factor.

    loss = -E_q(z|x)[log p(x|z)] + β KL(q(z|x) || p(z))

The paper's architectures are backbone options, not code here (see the ``betavae-*`` presets): the MLP 1200-1200
(``backbone=mlp, hidden=1200,1200``) and the dSprites conv net, four 4x4 stride-2 convolutions with 32, 32, 64, 64
channels, then a fully connected layer of 256 and a 10-unit code, the decoder its mirror
(``backbone=conv, channels=32,32,64,64, conv_hidden=256, latent_dim=10``).

The β-VAE family (this model, ``annealed-vae``, ``beta-tcvae``) also logs the KL of each latent unit once per epoch
(``kl_per_unit`` in metrics.jsonl, split "epoch") and draws latent traversals after training (vaelab.traversals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vaelab.models.base import MODELS
from vaelab.models.vae import VAE, VAEConfig

if TYPE_CHECKING:
    from vaelab.data import Dataset

EPOCH_BATCH = 500  # validation images the per-epoch KL per unit is measured on (the first ones: a fixed batch)


@dataclass
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0  # weight of the KL term (Higgins et al.: 4 on dSprites); beta <= 0 is refused


@MODELS.register("beta-vae", "beta-VAE (Higgins 2017): Bernoulli VAE with the KL weighted by beta (default 4)")
class BetaVAE(VAE):
    Config = BetaVAEConfig

    @torch.no_grad()
    def kl_per_unit(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z_j|x) || p(z_j)) per latent unit j, averaged over the batch x: (D,) nats."""
        from vaelab.traversals import kl_per_unit

        return kl_per_unit(self, x)

    def epoch_metrics(self, data: Dataset) -> dict[str, float | list[float]]:
        x = (data.val if len(data.val) else data.test)[:EPOCH_BATCH]
        kl = self.kl_per_unit(x)
        return {"kl_per_unit": [float(v) for v in kl], "kl_total": float(kl.sum())}

    def figures(self, out: Path, data: Dataset) -> list[Path] | None:
        if len(data.shape) != 3:
            return None
        from vaelab.traversals import disentanglement_figures

        return disentanglement_figures(out, self, data, out.parent / "metrics.jsonl")
