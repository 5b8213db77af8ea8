"""The shared model API: ``encode``, ``decode``, ``loss`` (named terms), ``sample`` where generative.

Conventions, the same for every model: a loss term is in nats per data point: summed over the
dimensions of one data point (and of its latent), then averaged over the batch (and over Monte
Carlo samples). ``Loss.total`` is what the optimizer minimizes; ``Loss.terms`` are named parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.errors import VaelabError
from vaelab.nets import BackboneConfig, build_decoder
from vaelab.probability import LIKELIHOODS
from vaelab.registry import Registry

if TYPE_CHECKING:
    from vaelab.data import Dataset


@dataclass
class Loss:
    """The training objective of one batch and its named terms, each a scalar tensor (nats/point)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ModelConfig(BackboneConfig):
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    sigma: float = 1.0  # standard deviation of the fixed-variance Gaussian likelihood (the start, when learned)
    sigma_min: float = 1e-3  # floor of a learned standard deviation (gaussian-learned, gaussian-pixel)

    def __post_init__(self) -> None:
        super().__post_init__()
        LIKELIHOODS.get(self.likelihood)  # a clear error for an unknown name
        if self.latent_dim < 1:
            raise VaelabError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.sigma > 0:
            raise VaelabError(f"sigma must be > 0, got {self.sigma}")
        if not self.sigma_min > 0:
            raise VaelabError(f"sigma_min must be > 0, got {self.sigma_min}")
        if self.likelihood == "gaussian-learned" and not self.sigma > self.sigma_min:
            raise VaelabError(f"sigma (the starting value) must exceed sigma_min={self.sigma_min}, got {self.sigma}")


class Model(nn.Module):
    """Base of every model: a decoder with a likelihood p(x|z); subclasses add the encoder and loss."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    generative: ClassVar[bool] = False
    #: a sequence model: a data point is (T, *frame) and the decoder and likelihood p(x|z) see one frame
    sequential: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.data_shape = tuple(data_shape)
        self.frame_shape = self.data_shape[1:] if self.sequential else self.data_shape  # what p(x|z) is over
        self.likelihood = LIKELIHOODS.get(config.likelihood).from_config(self.frame_shape, config)
        self.decoder = build_decoder(config, config.latent_dim, self.frame_shape, self.likelihood.params_per_channel)

    def encode(self, x: Tensor) -> Tensor | Distribution:
        raise NotImplementedError

    def code(self, x: Tensor) -> Tensor:
        """A deterministic representation of x (the code, or the posterior mean)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for latents of shape (..., D); leading dimensions become the batch shape."""
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood(out.view(*z.shape[:-1], *out.shape[1:]))

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        """The objective on a batch; ``step`` (None at evaluation) drives warm-ups and schedules."""
        raise NotImplementedError

    def metrics(self, x: Tensor) -> dict[str, Tensor]:
        """Model-specific evaluation numbers on a batch (scalar batch means), added to eval.json."""
        return {}

    def epoch_metrics(self, data: Dataset) -> dict[str, float | list[float]]:
        """Numbers logged once per epoch (split "epoch" in metrics.jsonl), called on every rank after validation;
        e.g. KL per latent unit, codebook usage. Lists go to metrics.jsonl only, scalars also to TensorBoard."""
        return {}

    def figures(self, out: Path, data: Dataset) -> list[Path] | None:
        """Model-specific figures drawn into ``out`` after training instead of the default ones; None: the defaults."""
        return None

    def load_extras(self, run_dir: Path) -> None:
        """Called by ``vaelab.load`` after the weights: attach what lives beside them (e.g. a VQ run's prior)."""

    def forward(self, x: Tensor, step: int | None = None) -> Loss:
        return self.loss(x, step)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.code(x)).mean

    def sample(self, n: int) -> Tensor:
        raise VaelabError(f"{type(self).__name__} is not a generative model: it has no prior to sample from")


#: name -> Model subclass
MODELS: Registry[type[Model]] = Registry("model")


def build_model(name: str, data_shape: tuple[int, ...], config: ModelConfig | None = None, **options: object) -> Model:
    """Build a registered model, e.g. ``build_model("vae", (1, 28, 28), latent_dim=32)``."""
    cls = MODELS.get(name)
    if config is None:
        from vaelab.config import make_config

        config = make_config(cls.Config, options)
    elif options:
        raise TypeError("give either a config or options, not both")
    return cls(config, data_shape)
