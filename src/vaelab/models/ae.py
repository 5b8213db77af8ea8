"""Plain autoencoder: a deterministic code z = f(x), trained to reconstruct x.

loss = -log p(x | z = f(x))   (cross-entropy for Bernoulli, squared error / 2 sigma^2 + const for Gaussian)

The code is linear by default; ``code_activation=sigmoid`` with ``hidden=()`` gives the one-layer sigmoid
encoder h = sigmoid(Wx + b) of the regularized autoencoders (sparse, denoising, contractive), and
``tied=true`` their decoder x̂ = Wᵀh + c with the same W.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec, LatentConfig, Loss, VectorLatentModel
from vaelab.nn import ACTIVATIONS, build_encoder
from vaelab.nn.backbones import MLPEncoder, TiedDecoder

CODE_ACTIVATIONS = ("linear", *ACTIVATIONS)


@dataclass(frozen=True)
class AEConfig(LatentConfig):
    code_activation: str = "linear"  # the nonlinearity of the code units; linear leaves f(x) unbounded
    tied: bool = False  # decoder weight = the encoder's, transposed (one-layer MLP encoders, as in the papers)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code_activation not in CODE_ACTIVATIONS:
            raise VaelabError(
                f"unknown code_activation {self.code_activation!r}; choose from: {', '.join(CODE_ACTIVATIONS)}"
            )


@MODELS.register("ae", "autoencoder: deterministic code, cross-entropy or squared-error reconstruction")
class AutoEncoder(VectorLatentModel):
    Config = AEConfig
    config: AEConfig

    def __init__(self, config: AEConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        code_activation = None if config.code_activation == "linear" else config.code_activation
        self.encoder = build_encoder(config, self.data_shape, config.latent_dim, code_activation)
        if config.tied:
            if not (isinstance(self.encoder, MLPEncoder) and len(self.encoder.net) <= 2):
                raise VaelabError(
                    "tied=true ties the decoder to a one-layer encoder: it needs hidden= (no hidden layers) "
                    f"and the mlp backbone, got hidden={config.hidden} on data of shape {self.data_shape}"
                )
            if self.likelihood.params_per_channel != 1:
                raise VaelabError(f"tied=true needs a likelihood with one parameter per pixel, not {config.likelihood}")
            self.decoder = TiedDecoder(self.encoder.net[0], self.data_shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def code(self, x: Tensor) -> Tensor:
        return self.encode(x)

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        reconstruction = -self.decode(self.encode(x)).log_prob(x).mean()
        return Loss(reconstruction, {"reconstruction": reconstruction})
