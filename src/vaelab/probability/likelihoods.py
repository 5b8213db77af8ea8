"""Decoder likelihoods p(x|z): they turn a decoder's raw output into a distribution over x.

Every likelihood returns an ``Independent`` distribution whose event is one whole data point, so
``log_prob`` is the log-likelihood of each data point, summed over its dimensions (in nats).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from vaelab.errors import VaelabError
from vaelab.registry import Registry


class Likelihood(nn.Module):
    """Maps decoder outputs of shape (..., C * params_per_channel, *spatial) to p(x|z)."""

    params_per_channel: int = 1
    needs_binary_data: bool = False

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    @classmethod
    def from_config(cls, data_shape: tuple[int, ...], config: object) -> Likelihood:
        """Build from a model config; likelihoods with options read them from it."""
        return cls(data_shape)

    def forward(self, params: Tensor) -> Distribution:
        raise NotImplementedError

    def check_data(self, x: Tensor) -> None:
        """Refuse data outside the likelihood's support (e.g. Bernoulli on grey levels > 1)."""
        lo, hi = float(x.min()), float(x.max())
        if self.needs_binary_data and (lo < 0 or hi > 1):
            raise VaelabError(
                f"the {self.name} likelihood needs data in [0, 1], but the data range is [{lo:g}, {hi:g}]; "
                "rescale the data or choose --set likelihood=gaussian"
            )

    @property
    def name(self) -> str:
        return next(e.name for e in LIKELIHOODS if e.obj is type(self))

    def _independent(self, base: Distribution) -> Distribution:
        return Independent(base, len(self.data_shape), validate_args=False)


LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli", "Bernoulli pixels with logits; for binary or [0, 1] data (cross-entropy)")
class BernoulliLikelihood(Likelihood):
    needs_binary_data = True

    def forward(self, params: Tensor) -> Distribution:
        return self._independent(Bernoulli(logits=params.float(), validate_args=False))


@LIKELIHOODS.register("gaussian", "Gaussian pixels with a fixed standard deviation `sigma` (squared error)")
class GaussianLikelihood(Likelihood):
    def __init__(self, data_shape: tuple[int, ...], sigma: float = 1.0) -> None:
        super().__init__(data_shape)
        if not sigma > 0:
            raise VaelabError(f"sigma must be > 0, got {sigma}")
        self.register_buffer("sigma", torch.tensor(float(sigma)), persistent=False)

    @classmethod
    def from_config(cls, data_shape: tuple[int, ...], config: object) -> Likelihood:
        return cls(data_shape, config.sigma)

    def forward(self, params: Tensor) -> Distribution:
        loc = params.float()
        return self._independent(Normal(loc, self.sigma.expand_as(loc), validate_args=False))
