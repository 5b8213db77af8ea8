"""Linear-Gaussian latent variable models, where log p(x) and p(z|x) are exact: probabilistic PCA and factor analysis.

    p(z) = N(0, I_d),   p(x|z) = N(W z + b, Psi),   Psi = sigma^2 I (noise=isotropic, pPCA) or diag(psi) (diagonal, FA)
    p(x)   = N(x; b, C),  C = W W^T + Psi                                    (D x D, never formed or inverted)
    p(z|x) = N(M^-1 W^T Psi^-1 (x - b), M^-1),  M = I + W^T Psi^-1 W         (d x d)

log p(x) goes through the Woodbury identity and the Cholesky factor of the d x d matrix M
(``torch.distributions.LowRankMultivariateNormal``); the posterior is a ``MultivariateNormal`` with precision M.

Three fits (``fit=``): ``closed-form``, Tipping & Bishop's (1999) maximum likelihood for pPCA (the top d eigenvectors
of the data covariance S, sigma^2 the mean of the discarded eigenvalues); ``em``, the EM algorithm (E-step: q = p(z|x);
M-step: maximize the bound in W and Psi) for both noise models; ``sgvb``, a VAE with this linear decoder and an
amortized encoder q(z|x) of a registered posterior family (diagonal or full), trained by the trainer. The first two
are not gradient training: the trainer calls the fitter registered for this class (``vaelab.training.fitters``).

Images are modelled as flattened vectors of D = C*H*W values. Noise variances are floored at ``noise_floor``: a
pixel that never varies in the training data would otherwise get zero variance and a singular Psi.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec, Loss, Model, ModelConfig
from vaelab.nn import ACTIVATIONS
from vaelab.nn.backbones import MLPEncoder
from vaelab.probability import POSTERIORS
from vaelab.probability.posteriors import inverse_softplus

NOISES = ("isotropic", "diagonal")
FITS = ("closed-form", "em", "sgvb")
STATISTICS_CHUNK = 4096  # rows of data per float64 chunk when the covariance is accumulated


@dataclass(frozen=True)
class LinearGaussianConfig(ModelConfig):
    latent_dim: int = 10  # d, smaller than the data dimension D
    noise: str = "isotropic"  # isotropic: sigma^2 I (probabilistic PCA); diagonal: Psi (factor analysis)
    fit: str = "closed-form"  # closed-form (pPCA only), em, or sgvb (a VAE trained by the trainer)
    posterior: str = "diagonal"  # sgvb: the encoder's family q(z|x), diagonal or full
    hidden: tuple[int, ...] = ()  # sgvb: the encoder's MLP widths; () is linear, like the exact posterior's mean
    activation: str = "relu"  # sgvb: the encoder's nonlinearity (with hidden layers)
    mc_samples: int = 1  # sgvb: L, draws of z per data point
    em_iterations: int = 500  # em: at most this many E and M steps
    em_tolerance: float = 1e-6  # em: stop when an iteration gains less than this (nats per data point)
    noise_floor: float = 1e-6  # smallest noise variance (sigma^2 or each psi_i)

    def __post_init__(self) -> None:
        for key, choices in (("noise", NOISES), ("fit", FITS)):
            if getattr(self, key) not in choices:
                raise VaelabError(f"unknown {key} {getattr(self, key)!r}; choose from: {', '.join(choices)}")
        POSTERIORS.get(self.posterior).check(self.latent_dim)
        if self.activation not in ACTIVATIONS:
            raise VaelabError(f"unknown activation {self.activation!r}; choose from: {', '.join(ACTIVATIONS)}")
        if self.latent_dim < 1:
            raise VaelabError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.fit == "closed-form" and self.noise == "diagonal":
            raise VaelabError(
                "fit=closed-form has no closed form for noise=diagonal (factor analysis has no eigenvector "
                "solution); use fit=em (or noise=isotropic for probabilistic PCA)"
            )
        if any(w < 1 for w in self.hidden) or self.mc_samples < 1 or self.em_iterations < 1:
            raise VaelabError("hidden must be positive widths, and mc_samples and em_iterations >= 1")
        if not self.noise_floor > 0 or not self.em_tolerance >= 0:
            raise VaelabError(
                f"noise_floor must be > 0 (the smallest noise variance) and em_tolerance >= 0, got "
                f"{self.noise_floor} and {self.em_tolerance}"
            )


def covariance_of(q: Distribution) -> tuple[Tensor, Tensor]:
    """The mean (..., d) and covariance (..., d, d) of a Gaussian over vectors: diagonal or full."""
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return q.base_dist.loc, torch.diag_embed(q.base_dist.scale**2)
    raise VaelabError(f"expected a Gaussian q(z|x) over vectors, got {type(q).__name__}")


def as_multivariate(q: Distribution) -> MultivariateNormal:
    """A diagonal or full Gaussian as a ``MultivariateNormal`` (for KLs between the two kinds)."""
    if isinstance(q, MultivariateNormal):
        return q
    mean, _ = covariance_of(q)
    return MultivariateNormal(mean, scale_tril=torch.diag_embed(q.base_dist.scale), validate_args=False)


@torch.no_grad()
def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (D,) and the maximum-likelihood covariance S = (1/N) sum (x - mean)(x - mean)^T (D, D) of the rows
    of x (N, D), in float64, accumulated in chunks."""
    x = x.flatten(1)
    n = x.shape[0]
    if n < 2:
        raise VaelabError(f"fitting needs at least 2 data points, got {n}")
    mean = x.double().mean(0)
    s = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, n, STATISTICS_CHUNK):
        r = x[i : i + STATISTICS_CHUNK].double() - mean
        s += r.T @ r
    return mean, s / n


def floored(psi: Tensor, floor: float, what: str) -> Tensor:
    """psi with every entry below ``floor`` raised to it, and a warning saying how many were."""
    low = psi < floor
    if bool(low.any()):
        warnings.warn(
            f"{what}: {int(low.sum())} of {psi.numel()} noise variances fell below noise_floor={floor:g} (inputs that "
            "(almost) never vary in the training data) and were set to it; their log-density is set by the floor",
            stacklevel=2,
        )
    return psi.clamp(min=floor)


def closed_form_ppca(s: Tensor, d: int, floor: float) -> tuple[Tensor, Tensor]:
    """Tipping & Bishop's maximum likelihood for pPCA from the covariance S: W = U_d (Lambda_d - sigma^2 I)^(1/2),
    sigma^2 = the mean of the D - d discarded eigenvalues. Returns W (D, d) and sigma^2 (a 0-dim tensor)."""
    eigenvalues, vectors = torch.linalg.eigh(s)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    sigma2 = floored(eigenvalues[d:].mean(), floor, "sigma^2 of the closed-form fit")
    w = vectors[:, :d] * (eigenvalues[:d] - sigma2).clamp(min=0).sqrt()
    return w, sigma2


def mean_log_likelihood(w: Tensor, psi: Tensor, s: Tensor) -> Tensor:
    """(1/N) sum_n log N(x_n; mean, W W^T + Psi) from the covariance S alone (the mean is the ML mean):
    -(1/2) [D log 2 pi + log|C| + tr(C^-1 S)], with log|C| = log|Psi| + log|M| and
    tr(C^-1 S) = tr(Psi^-1 S) - tr(M^-1 A^T S A), A = Psi^-1 W (Woodbury; only d x d factorizations)."""
    dim, d = w.shape
    a = w / psi[:, None]
    m = torch.eye(d, dtype=w.dtype, device=w.device) + w.T @ a
    chol = torch.linalg.cholesky(m)
    log_det = psi.log().sum() + 2 * chol.diagonal().log().sum()
    sa = s @ a
    trace = (s.diagonal() / psi).sum() - torch.trace(torch.cholesky_solve(a.T @ sa, chol))
    return -0.5 * (dim * math.log(2 * math.pi) + log_det + trace)


def em_step(w: Tensor, psi: Tensor, s: Tensor, isotropic: bool, floor: float) -> tuple[Tensor, Tensor]:
    """One E step and M step from the covariance S (Rubin & Thayer 1982; Tipping & Bishop 1999 for pPCA).

    E: q(z_n) = p(z_n|x_n) = N(M^-1 A^T r_n, M^-1), A = Psi^-1 W, r_n = x_n - mean.
    M: W' = (1/N sum r_n E[z_n]^T) (1/N sum E[z_n z_n^T])^-1 = S A M^-1 (M^-1 + M^-1 A^T S A M^-1)^-1,
       Psi' = diag(S - W' (S A M^-1)^T), averaged over the D inputs for pPCA, then floored."""
    d = w.shape[1]
    a = w / psi[:, None]
    m = torch.eye(d, dtype=w.dtype, device=w.device) + w.T @ a
    m_inv = torch.cholesky_inverse(torch.linalg.cholesky(m))
    b = s @ a @ m_inv  # (1/N) sum r_n E[z_n]^T
    ezz = m_inv + b.T @ a @ m_inv  # (1/N) sum E[z_n z_n^T] = M^-1 + M^-1 A^T S A M^-1
    w_new = torch.linalg.solve(ezz, b.T).T
    psi_new = s.diagonal() - (w_new * b).sum(1)
    if isotropic:
        psi_new = psi_new.mean().expand_as(psi_new)
    return w_new, floored(psi_new, floor, "EM's M-step")


@MODELS.register(
    "linear-gaussian",
    "probabilistic PCA / factor analysis: exact log p(x) and p(z|x); fit=closed-form, em or sgvb (a linear VAE)",
)
class LinearGaussian(Model):
    Config = LinearGaussianConfig
    generative = True
    config: LinearGaussianConfig

    def __init__(self, config: LinearGaussianConfig, data: DataSpec | tuple[int, ...]) -> None:
        super().__init__(config, data)
        dim, d = math.prod(self.data_shape), config.latent_dim
        if d >= dim:
            raise VaelabError(
                f"latent_dim={d} must be smaller than the data dimension D={dim} (a {self.data_shape} data point "
                "flattened): with d >= D the noise has nothing left to explain"
            )
        self.dim = dim
        self.latent_size = d
        self.weight = nn.Parameter(torch.randn(dim, d) / math.sqrt(d))  # W
        self.bias = nn.Parameter(torch.zeros(dim))  # b
        size = 1 if config.noise == "isotropic" else dim
        start = float(inverse_softplus(torch.tensor(1.0)))
        self.noise_raw = nn.Parameter(torch.full((size,), start))  # sigma^2 or psi = noise_floor + softplus(raw)
        if config.fit == "sgvb":
            self.posterior = POSTERIORS.get(config.posterior)(d)
            act = ACTIVATIONS[config.activation]
            self.encoder = MLPEncoder(self.data_shape, self.posterior.num_params, config.hidden, act)

    @property
    def amortized(self) -> bool:
        """Whether q(z|x) is an encoder (fit=sgvb); else ``encode`` is the exact posterior (the E-step's q)."""
        return self.config.fit == "sgvb"

    # -- the generative model ---------------------------------------------------------------------------------------

    def noise_variance(self) -> Tensor:
        """The noise variances (D,): sigma^2 repeated (isotropic) or psi (diagonal), each >= noise_floor."""
        return (self.config.noise_floor + F.softplus(self.noise_raw)).expand(self.dim)

    @torch.no_grad()
    def set_parameters(self, weight: Tensor, bias: Tensor, noise: Tensor) -> None:
        """Set W (D, d), b (D,) and the noise variance (a scalar or (D,); floored at noise_floor)."""
        floor = self.config.noise_floor
        noise = torch.as_tensor(noise, dtype=torch.float64).reshape(-1)
        if self.config.noise == "isotropic":
            noise = noise.mean().reshape(1)
        elif noise.numel() == 1:
            noise = noise.expand(self.dim)
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.noise_raw.copy_(inverse_softplus((noise - floor).clamp(min=1e-30)))

    def prior(self) -> Distribution:
        """p(z) = N(0, I_d)."""
        return Independent(self.prior_marginals(), 1, validate_args=False)

    def prior_marginals(self) -> Distribution:
        """p(z_j) = N(0, 1) for each unit, batch shape (d,)."""
        zeros = self.weight.new_zeros(self.latent_size)
        return Normal(zeros, torch.ones_like(zeros), validate_args=False)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z) = N(W z + b, Psi) over data points of the data's shape, for z of shape (..., d)."""
        mean = (z @ self.weight.T + self.bias).view(*z.shape[:-1], *self.data_shape)
        scale = self.noise_variance().sqrt().view(self.data_shape).expand_as(mean)
        return Independent(Normal(mean, scale, validate_args=False), len(self.data_shape), validate_args=False)

    def marginal(self) -> LowRankMultivariateNormal:
        """p(x) = N(b, W W^T + Psi) over flattened data points: Woodbury and a d x d Cholesky inside."""
        return LowRankMultivariateNormal(self.bias, self.weight, self.noise_variance(), validate_args=False)

    def log_marginal(self, x: Tensor) -> Tensor:
        """The exact log p(x) per data point (B,)."""
        return self.marginal().log_prob(x.flatten(1))

    def exact_posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z|x) = N(M^-1 W^T Psi^-1 (x - b), M^-1), M = I + W^T Psi^-1 W: batch (B,), event (d,)."""
        a = self.weight / self.noise_variance()[:, None]
        m = torch.eye(self.latent_size, dtype=a.dtype, device=a.device) + self.weight.T @ a
        chol = torch.linalg.cholesky(m)
        mean = torch.cholesky_solve(((x.flatten(1) - self.bias) @ a).T, chol).T
        return MultivariateNormal(mean, precision_matrix=m.expand(len(mean), -1, -1), validate_args=False)

    # -- inference and the bound -----------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x): the encoder's (fit=sgvb), else the exact posterior p(z|x)."""
        if self.amortized:
            return self.posterior(self.encoder(x))
        return self.exact_posterior(x)

    def code(self, x: Tensor) -> Tensor:
        """The mean of q(z|x) (B, d)."""
        return self.encode(x).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        """W E_q[z] + b, shaped like x."""
        return self.decode(self.code(x)).mean

    def expected_log_likelihood(self, x: Tensor, q: Distribution) -> Tensor:
        """E_q(z)[log p(x|z)] in closed form (B,): -(1/2) sum_i [log 2 pi psi_i + ((x - W m - b)_i^2 +
        (W S W^T)_ii) / psi_i] for q = N(m, S)."""
        mean, cov = covariance_of(q)
        psi = self.noise_variance()
        residual = x.flatten(1) - mean @ self.weight.T - self.bias
        spread = torch.einsum("ij,bjk,ik->bi", self.weight, cov, self.weight)
        return -0.5 * ((2 * math.pi * psi).log() + (residual**2 + spread) / psi).sum(-1)

    def elbo(self, x: Tensor, q: Distribution) -> Tensor:
        """The ELBO of q in closed form, E_q[log p(x|z)] - KL(q || p(z)) (B,); equals log p(x) - KL(q || p(z|x))."""
        return self.expected_log_likelihood(x, q) - kl_divergence(q, self.prior())

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        """sgvb: the negative SGVB estimate of the ELBO (L reparameterized draws, the KL in closed form); otherwise
        the exact negative log-likelihood. Outside training (``step`` None) the exact ``log_px`` is a term too."""
        if step is None:
            self.check_data(x)
        if not self.amortized:
            log_px = self.log_marginal(x).mean()
            return Loss(-log_px, {"log_px": log_px})
        q = self.encode(x)
        z = q.rsample((self.config.mc_samples,))
        reconstruction = -self.decode(z).log_prob(x).mean()
        kl = kl_divergence(q, self.prior()).mean()
        terms = {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}
        if step is None:
            terms["log_px"] = self.log_marginal(x).mean()
        return Loss(reconstruction + kl, terms)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Means W z + b of p(x|z) for n draws z ~ p(z), shaped like the data."""
        return self.decode(self.prior().sample((n,))).mean

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """One group of every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def alternation_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder phi, decoder theta): the encoder's weights, and W, b and the noise."""
        if not self.amortized:
            raise VaelabError(
                f"train.alternate needs an encoder to alternate with: fit={self.config.fit} has none (the E-step is "
                "exact); use fit=sgvb"
            )
        return list(self.encoder.parameters()), [self.weight, self.bias, self.noise_raw]

    # -- fits without gradients ------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor) -> float:
        """Tipping & Bishop's maximum-likelihood pPCA on the rows of x; returns the mean training log-likelihood."""
        if self.config.noise != "isotropic":
            raise VaelabError("fit=closed-form has no closed form for noise=diagonal (factor analysis); use fit=em")
        mean, s = moments(x)
        w, sigma2 = closed_form_ppca(s, self.latent_size, self.config.noise_floor)
        self.set_parameters(w, mean, sigma2)
        return float(mean_log_likelihood(w, sigma2.expand(self.dim), s))

    @torch.no_grad()
    def fit_em(self, x: Tensor) -> Iterator[float]:
        """EM from the current W (b is the data mean, Psi starts at the data's variances): yields the mean training
        log-likelihood after each iteration, and stops after ``em_iterations`` or when one gains less than
        ``em_tolerance``. The model holds the latest parameters at every yield."""
        cfg = self.config
        mean, s = moments(x)
        isotropic = cfg.noise == "isotropic"
        w = self.weight.double() * s.diagonal().mean().sqrt()
        psi = s.diagonal().mean().expand(self.dim) if isotropic else s.diagonal()
        psi = floored(psi, cfg.noise_floor, "EM's start")
        previous = -math.inf
        for _ in range(cfg.em_iterations):
            w, psi = em_step(w, psi, s, isotropic, cfg.noise_floor)
            self.set_parameters(w, mean, psi)
            ll = float(mean_log_likelihood(w, psi, s))
            yield ll
            if ll - previous < cfg.em_tolerance:
                return
            previous = ll
