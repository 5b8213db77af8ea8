"""The shared model API: ``loss`` (named terms) for every model; ``encode``, ``decode``, ``code``, ``reconstruct``
and ``sample`` where they apply; ``param_groups`` for the optimizer; ``save_pretrained`` for persistence.

Conventions, the same for every model: a loss term is in nats per data point: summed over the dimensions of one
data point (and of its latent), then averaged over the batch (and over Monte Carlo samples). ``Loss.total`` is what
the optimizer minimizes; ``Loss.terms`` are named parts.

A model file is math only: it never sees paths, runs, data sets or figures. What a model is evaluated on, logs per
epoch and draws is registered for its class from outside (``vaelab.eval``, ``vaelab.viz``), the way
``torch.distributions.register_kl`` attaches a KL rule to a pair of classes. Configs are frozen dataclasses; what is
known only from the data (the shape of an example, the training set's size) comes in as a ``DataSpec``.

The classes:

    Model                 loss, param_groups, save_pretrained; no layers of its own
    LikelihoodModel       + a likelihood p(x|z) over one data point (or one frame of a sequence)
    VectorLatentModel     + a decoder from a latent vector (the autoencoders and VAEs, TD-VAE's state)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.core.config import make_config
from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import save_module
from vaelab.core.registry import Registry
from vaelab.nn import BackboneConfig, build_decoder
from vaelab.probability import LIKELIHOODS

#: the kinds of data a model can be trained on (a data set declares its kind)
DATA_KINDS = ("images", "vectors", "sequences", "codes")


@dataclass
class Loss:
    """The training objective of one batch and its named terms, each a scalar tensor (nats/point)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """What a model is told about its data: the shape of one example, and the training set's size where a loss
    needs it (beta-TCVAE's minibatch-weighted sampling); 0 when unknown."""

    shape: tuple[int, ...]
    size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.shape or any(s < 1 for s in self.shape):
            raise VaelabError(f"a data point's shape must be positive sizes, got {self.shape}")
        if self.size < 0:
            raise VaelabError(f"the data set size must be >= 0, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into config.json: ``{"shape": [...], "size": N}``."""
        return {"shape": list(self.shape), "size": self.size}

    @classmethod
    def of(cls, data: DataSpec | tuple[int, ...] | list[int]) -> DataSpec:
        """A ``DataSpec`` as is, or one made from a bare shape (size 0: unknown)."""
        return data if isinstance(data, DataSpec) else cls(tuple(data))


@dataclass(frozen=True)
class ModelConfig:
    """The base of every model's config: no fields (each model's config holds only the fields it uses)."""


@dataclass(frozen=True)
class LikelihoodConfig(ModelConfig):
    """The likelihood p(x|z) of a model: a ``LIKELIHOODS`` name and its scale options.

    ``likelihood`` is ``bernoulli`` (logits), ``gaussian`` (fixed standard deviation ``sigma``), ``gaussian-learned``
    (one learned σ, starting at ``sigma``), ``gaussian-pixel`` (σ(z) per pixel) or ``continuous-bernoulli``;
    ``sigma_min`` is the floor of a learned σ.
    """

    likelihood: str = "bernoulli"
    sigma: float = 1.0  # standard deviation of the fixed-variance Gaussian likelihood (the start, when learned)
    sigma_min: float = 1e-3  # floor of a learned standard deviation (gaussian-learned, gaussian-pixel)

    def __post_init__(self) -> None:
        LIKELIHOODS.get(self.likelihood)  # a clear error for an unknown name
        if not self.sigma > 0:
            raise VaelabError(f"sigma must be > 0, got {self.sigma}")
        if not self.sigma_min > 0:
            raise VaelabError(f"sigma_min must be > 0, got {self.sigma_min}")
        if self.likelihood == "gaussian-learned" and not self.sigma > self.sigma_min:
            raise VaelabError(f"sigma (the starting value) must exceed sigma_min={self.sigma_min}, got {self.sigma}")


@dataclass(frozen=True)
class LatentConfig(BackboneConfig, LikelihoodConfig):
    """A latent vector decoded by a backbone: the autoencoders, the VAEs."""

    latent_dim: int = 16

    def __post_init__(self) -> None:
        BackboneConfig.__post_init__(self)
        LikelihoodConfig.__post_init__(self)
        if self.latent_dim < 1:
            raise VaelabError(f"latent_dim must be >= 1, got {self.latent_dim}")


class Model(nn.Module):
    """Base of every model: its config, what it knows of its data, its loss."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    generative: ClassVar[bool] = False
    #: the kinds of data (DATA_KINDS) this model is built for
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "vectors")

    def __init__(self, config: ModelConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise VaelabError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.data = DataSpec.of(data)
        self.data_shape = self.data.shape
        #: what building the model decided that a user should hear (e.g. images padded for a strided net)
        self.notes: list[str] = []

    @classmethod
    def needs_binary_data(cls, config: ModelConfig) -> bool:
        """Whether grey-level data is binarized for this model (a Bernoulli likelihood): decided before it is built."""
        return False

    def check_data(self, x: Tensor) -> None:
        """Refuse data this model cannot score (called once on the training data, and by ``loss`` outside training)."""

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        """The objective on a batch; ``step`` (None at evaluation) drives warm-ups and schedules."""
        raise NotImplementedError

    def forward(self, x: Tensor, step: int | None = None) -> Loss:
        """``loss(x, step)``: calling the module is the objective (what DistributedDataParallel wraps)."""
        return self.loss(x, step)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (the role of nanoGPT's ``configure_optimizers``): one group of every
        trainable parameter by default; a model with parts that want their own learning rate or Adam betas (the
        FactorVAE discriminator) returns more. ``lr`` is the run's learning rate, the default of each group."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def alternation_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The two parameter sets ``train.alternate`` takes turns with: (encoder phi, decoder theta), where theta is
        everything of the generative model (decoder, prior, likelihood scale). Refused by models without an encoder."""
        raise VaelabError(
            f"{type(self).__name__} has no encoder and decoder to alternate: train.alternate applies to VAEs"
        )

    def code(self, x: Tensor) -> Tensor:
        """A deterministic representation of x (B, F): the code, or the posterior mean."""
        raise VaelabError(f"{type(self).__name__} has no code of its inputs")

    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x|code(x)), shaped like x: what ``mse`` and the reconstruction figures compare with x."""
        raise VaelabError(f"{type(self).__name__} does not reconstruct its inputs")

    def sample(self, n: int) -> Tensor:
        """``n`` draws of the generative model (the means of p(x|z), z ~ p(z)); refused by models without a prior."""
        raise VaelabError(f"{type(self).__name__} is not a generative model: it has no prior to sample from")

    def attach_prior(self, prior: Any, reason: str = "") -> None:
        """Attach a separately trained prior over this model's codes (VQ models take one); others have none."""
        raise VaelabError(f"{type(self).__name__} takes no code prior")

    # -- persistence --------------------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> os.PathLike:
        """Write FOLDER/config.json and FOLDER/model.safetensors; ``vaelab.from_pretrained(FOLDER)`` rebuilds it."""
        return save_module(
            folder, MODELS.name_of(type(self)), dataclasses.asdict(self.config), self.data.to_dict(), self.state_dict()
        )


class LikelihoodModel(Model):
    """A model with a likelihood p(x|z) over one data point (one frame for a sequence model: ``frame_shape``)."""

    Config: ClassVar[type[ModelConfig]] = LikelihoodConfig
    #: a sequence model: a data point is (T, *frame) and p(x|z) is over one frame
    sequential: ClassVar[bool] = False

    def __init__(self, config: LikelihoodConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        self.frame_shape = self.data_shape[1:] if self.sequential else self.data_shape
        if not self.frame_shape:
            raise VaelabError(f"{type(self).__name__} models sequences of frames; got data of shape {self.data_shape}")
        self.likelihood = LIKELIHOODS.get(config.likelihood).from_config(self.frame_shape, config)

    @classmethod
    def needs_binary_data(cls, config: ModelConfig) -> bool:
        """Whether the configured likelihood is over binary data (Bernoulli): then grey-level data is binarized."""
        return LIKELIHOODS.get(config.likelihood).needs_binary_data

    def check_data(self, x: Tensor) -> None:
        """Refuse data outside the likelihood's support (Bernoulli and continuous Bernoulli: [0, 1]), in one line."""
        self.likelihood.check_data(x)


class VectorLatentModel(LikelihoodModel):
    """A likelihood model whose decoder maps a latent vector of ``decoder_input`` units to p(x|z)."""

    Config: ClassVar[type[ModelConfig]] = LatentConfig

    def __init__(self, config: LatentConfig, data: DataSpec | tuple[int, ...], decoder_input: int | None = None):
        super().__init__(config, data)
        size = config.latent_dim if decoder_input is None else decoder_input
        self.decoder = build_decoder(config, size, self.frame_shape, self.likelihood.params_per_channel)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) for latents of shape (..., D); leading dimensions become the batch shape."""
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood(out.view(*z.shape[:-1], *out.shape[1:]))

    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x|z) at z = ``code(x)`` (the posterior mean for a VAE)."""
        return self.decode(self.code(x)).mean


#: name -> Model subclass
MODELS: Registry[type[Model]] = Registry("model")


def build_model(
    name: str, data: DataSpec | tuple[int, ...], config: ModelConfig | None = None, **options: object
) -> Model:
    """Build a registered model, e.g. ``build_model("vae", (1, 28, 28), latent_dim=32)``."""
    cls = MODELS.get(name)
    if config is None:
        config = make_config(cls.Config, options)
    elif options:
        raise TypeError("give either a config or options, not both")
    return cls(config, DataSpec.of(data))


def model_from_spec(spec: dict[str, Any]) -> Model:
    """A model rebuilt (untrained) from the config.json that ``save_pretrained`` wrote."""
    cls = MODELS.get(spec["name"])
    config = make_config(cls.Config, spec.get("config", {}), "model")
    data = spec.get("data") or {}
    if "shape" not in data:
        raise VaelabError("the saved model's config.json has no data shape")
    return cls(config, DataSpec(tuple(data["shape"]), int(data.get("size", 0))))
