"""Priors p(z) over a latent vector, found by name through ``PRIORS`` (``--set prior=NAME``).

    standard   N(0, I)                                                   (Kingma & Welling 2014)
    learned    N(mu_p, diag sigma_p^2), mu_p and sigma_p learned          (the general Gaussian of the KL derivation)
    mog        sum_k pi_k N(mu_k, diag sigma_k^2), K learned components   (a mixture of Gaussians)
    vamp       (1/K) sum_k q(z | u_k), K learned pseudo-inputs u_k        (VampPrior, Tomczak & Welling 2018)

A prior is a module (its parameters train with the model) whose ``forward(encode)`` returns p(z) as a
``torch.distributions`` object with event shape (D,); ``encode`` maps inputs to q(z|x) and is what the VampPrior
evaluates at its pseudo-inputs (the other priors ignore it). ``marginals(encode)`` gives the per-unit marginals
p(z_j) as one distribution of batch shape (D,), which is what traversals, the manifold grid, active units and the
KL per unit read. The KL of the ELBO is closed-form where ``kl_divergence`` has a rule for (q, p) (standard and
learned, with a diagonal or a full-covariance q) and a Monte Carlo estimate from the ELBO's own draws otherwise
(``closed_form_kl``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)
from torch.distributions.kl import _kl_independent_independent

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry

Encode = Callable[[Tensor], Distribution]
MIN_PRIOR_SCALE = 1e-4


def closed_form_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q || p) per data point when torch.distributions has a rule for the pair, else None (then estimate it)."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def factorized(d: Distribution) -> Normal | None:
    """The units of a Gaussian that factorizes over them (a diagonal ``Independent(Normal)``) as one Normal of batch
    (..., D), else None: per-unit KLs and free bits need both q and p of this form."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        return d.base_dist
    return None


def unit_normals(d: Distribution) -> Normal | None:
    """The per-unit marginals of a Gaussian over vectors as one Normal of batch (..., D), else None."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        return d.base_dist
    if isinstance(d, MultivariateNormal):
        return Normal(d.loc, d.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt(), validate_args=False)
    return None


class Prior(nn.Module):
    """p(z) over latent vectors of size ``latent_dim``; subclasses build it in ``forward``."""

    #: whether kl_divergence(q, p) has a closed form for the library's posteriors (else Monte Carlo)
    closed_form: ClassVar[bool] = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise VaelabError(f"a prior needs latent_dim >= 1, got {latent_dim}")
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows the module's device

    @classmethod
    def check(cls, components: int) -> None:
        """Refuse options this prior cannot take (called when a model config is validated)."""

    @classmethod
    def build(cls, latent_dim: int, components: int, data_shape: tuple[int, ...], data_range: Any) -> Prior:
        """The prior a model config asks for: ``components`` is K of a mixture, ``data_shape`` and ``data_range`` the
        shape and value range of an input (what the VampPrior's pseudo-inputs take); a prior uses what it needs.
        """
        return cls(latent_dim)

    def forward(self, encode: Encode | None = None) -> Distribution:
        """p(z) as a ``torch.distributions`` object with event shape (D,); ``encode`` is the model's x -> q(z|x)."""
        raise NotImplementedError

    def marginals(self, encode: Encode | None = None) -> Distribution:
        """p(z_j) for every unit j: a distribution of batch shape (D,) and scalar events."""
        normal = unit_normals(self(encode))
        if normal is None:
            raise NotImplementedError
        return normal


PRIORS: Registry[type[Prior]] = Registry("prior")


def _diagonal(loc: Tensor, scale: Tensor) -> Distribution:
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class UnitGaussian(Independent):
    """N(0, I) over vectors, as ``Independent(Normal(0, 1), 1)``: a type of its own so that the KL of a diagonal
    q(z|x) to it has its own closed form (fewer operations than the rule for two general diagonal Gaussians)."""


@register_kl(Independent, UnitGaussian)
def _kl_diagonal_unit(q: Independent, p: UnitGaussian) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 0.5 sum_j (mu_j^2 + sigma_j^2 - 1) - sum_j log sigma_j; any other
    Independent q takes torch's rule for two Independents."""
    base = factorized(q)
    if base is None or q.event_shape != p.event_shape:
        return _kl_independent_independent(q, p)
    loc, scale = base.loc, base.scale
    return 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)


@PRIORS.register("standard", "N(0, I): the VAE's fixed prior (the default)")
class StandardNormal(Prior):
    """p(z) = N(0, I), the VAE's fixed prior: no parameters; its KL to a diagonal or full-covariance q is exact."""

    def forward(self, encode: Encode | None = None) -> Distribution:
        """N(0, I) over D units, on the module's device."""
        zeros = self._anchor.new_zeros(self.latent_dim)
        return UnitGaussian(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)


@PRIORS.register("learned", "N(mu_p, diag sigma_p^2) with learned mean and standard deviation")
class LearnedGaussian(Prior):
    """sigma_p = softplus(raw) + 1e-4, starting at N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(1.0 - MIN_PRIOR_SCALE))))

    def forward(self, encode: Encode | None = None) -> Distribution:
        """N(mu_p, diag sigma_p^2) with the current parameters."""
        return _diagonal(self.loc, F.softplus(self.raw_scale) + MIN_PRIOR_SCALE)


class DiagonalMixture(MixtureSameFamily):
    """sum_k pi_k N(mu_k, diag sigma_k^2) over vectors: ``MixtureSameFamily`` of diagonal Gaussians whose
    ``log_prob`` takes every component at once through two matrix products,

        sum_j (z_j - mu_kj)^2 / sigma_kj^2 = z^2 . (1/sigma_k^2) - 2 z . (mu_k / sigma_k^2) + mu_k^2 . (1/sigma_k^2),

    in float64 (the three terms are far larger than their sum when the components are narrow), instead of an
    (N, K, D) tensor of differences: 12x faster on one CPU thread for K = 500 components of 40 units. ``loc`` and
    ``scale`` are (K, D), ``logits`` (K,); everything else (sampling, moments) is ``MixtureSameFamily``'s."""

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Categorical(logits=logits, validate_args=False), _diagonal(loc, scale), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(z) for z of shape (..., D): shape (...)."""
        normal = self.component_distribution.base_dist
        loc, scale = normal.loc.double(), normal.scale.double()  # (K, D)
        precision = scale.pow(-2)
        z = value.double().reshape(-1, loc.shape[-1])
        quadratic = z.square() @ precision.T - 2 * z @ (loc * precision).T + (loc.square() * precision).sum(-1)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_pi = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
        out = torch.logsumexp(log_pi - log_norm - 0.5 * quadratic, dim=-1)
        return out.reshape(value.shape[:-1]).to(value.dtype)


def mixture(logits: Tensor, components: Distribution) -> MixtureSameFamily:
    """The mixture of ``components`` (batch (K,), event (D,)) with weights softmax(``logits``): a ``DiagonalMixture``
    when the components are diagonal Gaussians, else torch's ``MixtureSameFamily``."""
    normal = factorized(components)
    if normal is not None and normal.loc.dim() == 2:
        return DiagonalMixture(logits, normal.loc, normal.scale)
    return MixtureSameFamily(Categorical(logits=logits, validate_args=False), components, validate_args=False)


class _Mixture(Prior):
    closed_form = False

    @classmethod
    def check(cls, components: int) -> None:
        if components < 1:
            raise VaelabError(f"prior_components (K, the mixture's components) must be >= 1, got {components}")

    def components(self, encode: Encode | None) -> Distribution:
        """The K components, one distribution of batch shape (K,) and event (D,)."""
        raise NotImplementedError

    def weights(self) -> Tensor:
        """The mixture's logits over its K components, shape (K,)."""
        raise NotImplementedError

    def forward(self, encode: Encode | None = None) -> Distribution:
        """p(z) = sum_k pi_k p_k(z), with pi = softmax(``weights()``) and p_k the ``components``."""
        return mixture(self.weights(), self.components(encode))

    def marginals(self, encode: Encode | None = None) -> Distribution:
        normal = unit_normals(self.components(encode))  # batch (K, D)
        if normal is None:
            raise NotImplementedError
        logits = self.weights().expand(self.latent_dim, -1)  # (D, K)
        units = Normal(normal.loc.T, normal.scale.T, validate_args=False)  # (D, K)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), units, validate_args=False)


@PRIORS.register("mog", "a learned mixture of K diagonal Gaussians (K = prior_components)")
class MixtureOfGaussians(_Mixture):
    """Means start as draws from N(0, I) (the components then cover the standard prior), scales at 1, equal weights."""

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__(latent_dim)
        self.check(components)
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), math.log(math.expm1(1.0))))

    @classmethod
    def build(cls, latent_dim: int, components: int, data_shape: tuple[int, ...], data_range: Any) -> Prior:
        """A mixture of ``components`` diagonal Gaussians over ``latent_dim`` units."""
        return cls(latent_dim, components)

    def weights(self) -> Tensor:
        """The learned logits of the K mixture weights."""
        return self.logits

    def components(self, encode: Encode | None) -> Distribution:
        """N(mu_k, diag sigma_k^2), sigma_k = softplus(raw_k) + 1e-4: batch shape (K,), event (D,)."""
        return _diagonal(self.locs, F.softplus(self.raw_scales) + MIN_PRIOR_SCALE)


@PRIORS.register("vamp", "VampPrior: the mixture of q(z|u_k) over K learned pseudo-inputs (K = prior_components)")
class VampPrior(_Mixture):
    """p(z) = (1/K) sum_k q(z|u_k). The pseudo-inputs are parameters of the data's shape; for data in [0, 1] they are
    kept there by a hard tanh, u = hardtanh(raw, 0, 1), and start at N(0.05, 0.01) as in Tomczak & Welling's code."""

    def __init__(self, latent_dim: int, components: int, data_shape: tuple[int, ...], data_range: Any = None) -> None:
        super().__init__(latent_dim)
        self.check(components)
        self.data_range = tuple(data_range) if data_range is not None else None
        mean, std = (0.05, 0.01) if self.data_range is not None else (0.0, 0.01)
        self.pseudo_inputs = nn.Parameter(torch.randn(components, *data_shape) * std + mean)

    @classmethod
    def build(cls, latent_dim: int, components: int, data_shape: tuple[int, ...], data_range: Any) -> Prior:
        """K = ``components`` pseudo-inputs of the data's shape, kept in ``data_range`` when the data has one."""
        return cls(latent_dim, components, data_shape, data_range)

    def inputs(self) -> Tensor:
        """The pseudo-inputs u_k, (K, *data_shape): hardtanh(raw, lo, hi) for data in [lo, hi], else raw."""
        if self.data_range is None:
            return self.pseudo_inputs
        return F.hardtanh(self.pseudo_inputs, *self.data_range)

    def weights(self) -> Tensor:
        """Equal weights 1/K (zero logits): the VampPrior's mixture is uniform."""
        return self._anchor.new_zeros(len(self.pseudo_inputs))

    def components(self, encode: Encode | None) -> Distribution:
        """q(z|u_k) for every pseudo-input: the model's encoder at ``inputs()``; refused without ``encode``."""
        if encode is None:
            raise VaelabError("the VampPrior is a mixture of posteriors: it needs the model's encoder (encode=...)")
        return encode(self.inputs())
