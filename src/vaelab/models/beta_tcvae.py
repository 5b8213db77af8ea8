"""β-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in VAEs").

The KL term, averaged over the data, splits into three parts (q(z) the aggregate posterior, q(z_j) its marginals):

    E_x KL(q(z|x) || p(z)) = I_q(x; z)                         index-code mutual information   (mi)
                           + KL(q(z) || prod_j q(z_j))          total correlation               (tc)
                           + sum_j KL(q(z_j) || p(z_j))         dimension-wise KL               (dimwise_kl)

    loss = -E_q[log p(x|z)] + α mi + β tc + γ dimwise_kl        (α = γ = 1 and β > 1 in the paper)

Every part is a sample average over z_i ~ q(z|x_i) of a difference of log densities; log q(z) and log q(z_j) are
estimated by minibatch-weighted sampling (MWS, not stratified sampling) from the batch of M points out of N:

    log q(z_i)   ~ logsumexp_j log q(z_i | x_j)   - log(N M)
    log q(z_ij)  ~ logsumexp_k log q(z_ij | x_k)  - log(N M)

so mi + tc + dimwise_kl = mean_i [log q(z_i|x_i) - log p(z_i)] exactly: the Monte Carlo KL, the log(N M) constants
cancel. N is the training set's size, which the model is given when it is built (``DataSpec.size``; ``vaelab
train`` passes the training split's). With N >> M the
single terms are biased by multiples of log(N M) (mi is then close to log(N M), tc large and dimwise_kl as negative),
as in Chen et al.'s own estimator; the log(N M) offsets are constants and do not change the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec
from vaelab.models.betavae import BetaVAE
from vaelab.models.vae import VAEConfig


@dataclass(frozen=True)
class BetaTCVAEConfig(VAEConfig):
    beta: float = 6.0  # weight of the total correlation (Chen et al. use 6 on dSprites)
    alpha: float = 1.0  # weight of the index-code mutual information
    gamma: float = 1.0  # weight of the dimension-wise KL

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0 or self.gamma < 0:
            raise VaelabError(f"alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}")
        if self.posterior != "diagonal" or self.inner_latent_dim or self.free_bits or self.mc_samples != 1:
            raise VaelabError(
                "beta-tcvae needs one stochastic layer with a diagonal Gaussian posterior and one sample "
                "(posterior=diagonal, inner_latent_dim=0, mc_samples=1) and does not take free_bits"
            )
        if self.gradient_estimator != "reparameterization":
            raise VaelabError(
                "beta-tcvae's decomposition is reparameterized: use gradient_estimator=reparameterization"
            )


def mws_log_densities(q: Distribution, z: Tensor, dataset_size: int) -> tuple[Tensor, Tensor]:
    """Minibatch-weighted sampling estimates at z (M, D), q the batch's posteriors q(z|x_j) (diagonal Gaussians):
    log q(z_i) (M,) and log prod_d q(z_id) (M,), each a logsumexp over the M points minus log(N M)."""
    base = q.base_dist if isinstance(q, Independent) else q
    if not isinstance(base, Normal):
        raise VaelabError("minibatch-weighted sampling needs diagonal Gaussian posteriors")
    m = z.shape[0]
    if dataset_size < m:
        raise VaelabError(
            f"the data set size N={dataset_size} must be at least the batch size ({m}): N is the number of training "
            "points the model was built for (DataSpec(shape, size=N))"
        )
    pairwise = Normal(base.loc.unsqueeze(0), base.scale.unsqueeze(0)).log_prob(z.unsqueeze(1))  # (M_i, M_j, D)
    const = math.log(dataset_size * m)
    log_qz = torch.logsumexp(pairwise.sum(-1), dim=1) - const
    log_prod_qzd = (torch.logsumexp(pairwise, dim=1) - const).sum(-1)
    return log_qz, log_prod_qzd


def kl_decomposition(q: Distribution, p: Distribution, z: Tensor, dataset_size: int) -> dict[str, Tensor]:
    """Batch estimates of the index-code MI, the total correlation and the dimension-wise KL at z ~ q(z|x)."""
    log_qz, log_prod_qzd = mws_log_densities(q, z, dataset_size)
    log_qz_x, log_pz = q.log_prob(z), p.log_prob(z)
    return {
        "mi": (log_qz_x - log_qz).mean(),
        "tc": (log_qz - log_prod_qzd).mean(),
        "dimwise_kl": (log_prod_qzd - log_pz).mean(),
    }


@MODELS.register("beta-tcvae", "beta-TCVAE (Chen 2018): KL split into MI + beta TC + dim-wise KL, minibatch-weighted")
class BetaTCVAE(BetaVAE):
    Config = BetaTCVAEConfig
    config: BetaTCVAEConfig

    def __init__(self, config: BetaTCVAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        if self.data.size < 1:
            raise VaelabError(
                "beta-tcvae's minibatch-weighted sampling needs N, the number of training points: build it with "
                "DataSpec(shape, size=N), e.g. build_model('beta-tcvae', DataSpec((1, 64, 64), size=N))"
            )

    def regularizer(
        self, q: Distribution, p: Distribution, kl: Tensor, step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        parts = kl_decomposition(q, p, q.rsample(), self.data.size)
        ramp = self.kl_weight(step) / cfg.beta  # the KL warm-up, if any, scales all three parts
        penalty = ramp * (cfg.alpha * parts["mi"] + cfg.beta * parts["tc"] + cfg.gamma * parts["dimwise_kl"])
        return penalty, parts
