"""k-sparse autoencoder (Makhzani & Frey 2014): a linear code of which only the k largest units survive.

    a = f(x)            the (linear) code
    h = supp_k(a)       keep the k largest entries of each a, set the rest to 0
    loss = -log p(x | h)

The gradient flows through the kept units only: the others are constant zeros. The optional schedule
starts dense (``k_start`` units, the whole code by default) and lowers k linearly to ``k`` over
``k_anneal_steps`` steps, so that no unit dies before it has learned anything. The features
(``code``) keep the α·k largest units, the paper's encoding rule (α = 3 for its MNIST results).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.models.ae import AEConfig, AutoEncoder
from vaelab.models.base import MODELS, Loss


def top_k(a: Tensor, k: int) -> Tensor:
    """supp_k: the k largest entries of each row of a kept, the rest set to 0 (and cut from the gradient)."""
    values, indices = a.topk(k, dim=-1)
    return torch.zeros_like(a).scatter(-1, indices, values)


@dataclass(frozen=True)
class KSparseAEConfig(AEConfig):
    latent_dim: int = 100
    hidden: tuple[int, ...] = ()
    k: int = 25  # units kept per example in training
    alpha: float = 1.0  # the features keep round(alpha * k) units
    k_start: int = 0  # the schedule's first k; 0 means latent_dim (dense)
    k_anneal_steps: int = 0  # steps over which k falls linearly from k_start to k; 0: no schedule

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.latent_dim
        if not 1 <= self.k <= n:
            raise VaelabError(f"k must be in [1, latent_dim] = [1, {n}], got {self.k}")
        if not (self.alpha >= 1 and round(self.alpha * self.k) <= n):
            raise VaelabError(
                f"alpha must be in [1, latent_dim / k] = [1, {n / self.k:g}] (the features keep alpha*k of the "
                f"{n} units), got {self.alpha}"
            )
        if self.k_start != 0 and not self.k <= self.k_start <= n:
            raise VaelabError(f"k_start must be 0 (dense) or in [k, latent_dim] = [{self.k}, {n}], got {self.k_start}")
        if self.k_anneal_steps < 0:
            raise VaelabError(f"k_anneal_steps must be >= 0, got {self.k_anneal_steps}")


@MODELS.register("ksparse-ae", "k-sparse autoencoder: linear code, only the k largest units kept (k schedule, α·k)")
class KSparseAutoEncoder(AutoEncoder):
    Config = KSparseAEConfig
    config: KSparseAEConfig

    def k_at(self, step: int | None) -> int:
        """k at a training step: linear from k_start to k over k_anneal_steps; the final k at evaluation."""
        cfg = self.config
        if step is None or cfg.k_anneal_steps == 0:
            return cfg.k
        start = cfg.k_start or cfg.latent_dim
        return round(start + (cfg.k - start) * min(1.0, step / cfg.k_anneal_steps))

    def encode(self, x: Tensor) -> Tensor:
        return top_k(self.encoder(x), self.config.k)

    def code(self, x: Tensor) -> Tensor:
        return top_k(self.encoder(x), round(self.config.alpha * self.config.k))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)).mean  # with the k units the decoder was trained on

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        h = top_k(self.encoder(x), self.k_at(step))
        reconstruction = -self.decode(h).log_prob(x).mean()
        return Loss(reconstruction, {"reconstruction": reconstruction})
