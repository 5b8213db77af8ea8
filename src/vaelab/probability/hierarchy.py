"""Two stochastic layers as one distribution over the joint latent [h, z] (Burda et al. 2015, two-layer model).

    posterior  q(h, z | x) = q(h | x) q(z | h)        prior  p(h, z) = p(z) p(h | z)

Both are ``Chain``s: a first distribution and a conditional one, sampled ancestrally, with log densities added.
Holding [h, z] as one vector lets the ELBO, the IWAE bound and sampling treat the pair like any latent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution


class Chain(Distribution):
    """p(a, b) = p(a) p(b | a) over the vector [a, b], or [b, a] with ``flip`` (a is sampled first either way)."""

    arg_constraints: dict = {}  # noqa: RUF012  (torch's class attribute)
    has_rsample = True

    def __init__(
        self, first: Distribution, conditional: Callable[[Tensor], Distribution], second_dim: int, flip: bool = False
    ) -> None:
        self.first, self.conditional, self.flip = first, conditional, flip
        self.first_dim = first.event_shape[-1]
        size = torch.Size([self.first_dim + second_dim])
        super().__init__(first.batch_shape, size, validate_args=False)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([b, a] if self.flip else [a, b], dim=-1)

    def _split(self, value: Tensor) -> tuple[Tensor, Tensor]:
        if self.flip:
            b, a = value.split([value.shape[-1] - self.first_dim, self.first_dim], dim=-1)
        else:
            a, b = value.split([self.first_dim, value.shape[-1] - self.first_dim], dim=-1)
        return a, b

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        a = self.first.rsample(sample_shape)
        return self._join(a, self.conditional(a).rsample())

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        a, b = self._split(value)
        return self.first.log_prob(a) + self.conditional(a).log_prob(b)

    @property
    def mean(self) -> Tensor:
        """The ancestral means [E a, E[b | a = E a]], a deterministic code (E b itself has no closed form)."""
        a = self.first.mean
        return self._join(a, self.conditional(a).mean)
