"""Plain autoencoder: a deterministic code z = f(x), trained to reconstruct x.

loss = -log p(x | z = f(x))   (cross-entropy for Bernoulli, squared error / 2 sigma^2 + const for Gaussian)
"""

from __future__ import annotations

from torch import Tensor

from vaelab.models.base import MODELS, Loss, Model, ModelConfig
from vaelab.nets import build_encoder


@MODELS.register("ae", "autoencoder: deterministic code, cross-entropy or squared-error reconstruction")
class AutoEncoder(Model):
    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__(config, data_shape)
        self.encoder = build_encoder(config, self.data_shape, config.latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def code(self, x: Tensor) -> Tensor:
        return self.encode(x)

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        reconstruction = -self.decode(self.encode(x)).log_prob(x).mean()
        return Loss(reconstruction, {"reconstruction": reconstruction})
