"""Variational autoencoder (Kingma & Welling 2014) with a beta weight (Higgins et al. 2017).

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    loss    = -(1/L) sum_l log p(x|z_l) + beta * KL,     z_l ~ q(z|x)   (SGVB, L samples)

The prior p(z) is a registered ``Prior`` (``prior=standard|learned|mog|vamp``, see ``vaelab.probability.priors``).
The KL is closed-form where ``kl_divergence`` has a rule for (q, p), and otherwise (a mixture prior, two stochastic
layers) a Monte Carlo estimate from the same L draws as the reconstruction: KL ~ (1/L) sum_l [log q(z_l|x) - log
p(z_l)]. The expectation is a Monte Carlo average over L draws whose gradient comes from the chosen estimator
(reparameterization z = mu + L eps, or the score function). Options: KL warm-up (the weight rises from 0 to beta),
free bits (Kingma et al. 2016: KL below lambda nats per unit is not penalized), and two stochastic layers
x -> h -> z (Burda et al. 2015) with p(h, z) = p(z) p(h|z).

Variants (beta-VAE family, FactorVAE) override the ``regularizer`` hook, never ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.models.base import MODELS, DataSpec, LatentConfig, Loss, VectorLatentModel
from vaelab.nn import ACTIVATIONS, build_encoder
from vaelab.nn.backbones import MLPEncoder
from vaelab.probability import (
    ESTIMATORS,
    LIKELIHOODS,
    POSTERIORS,
    PRIORS,
    Chain,
    closed_form_kl,
    factorized,
    importance_weighted_bound,
)
from vaelab.probability.posteriors import DiagonalGaussian


@dataclass(frozen=True)
class VAEConfig(LatentConfig):
    beta: float = 1.0  # weight of the KL term; 1 gives the ELBO
    mc_samples: int = 1  # L, Monte Carlo samples of z per data point
    kl_warmup_steps: int = 0  # the KL weight rises linearly from 0 to beta over this many steps
    posterior: str = "diagonal"
    gradient_estimator: str = "reparameterization"  # or score-function (REINFORCE)
    baseline: bool = False  # score-function only: subtract the leave-one-out mean of the other L - 1 draws
    free_bits: float = 0.0  # lambda, nats per latent unit under which the KL is not penalized
    inner_latent_dim: int = 0  # size of a second, lower stochastic layer h between x and z; 0: one layer
    inner_hidden: tuple[int, ...] = (50, 50)  # MLP widths between h and z (two stochastic layers)
    prior: str = "standard"  # p(z): standard, learned, mog or vamp
    prior_components: int = 500  # K of the mog and vamp priors (Tomczak & Welling: 500 pseudo-inputs)

    def __post_init__(self) -> None:
        super().__post_init__()
        head = POSTERIORS.get(self.posterior)
        ESTIMATORS.get(self.gradient_estimator)
        if not self.beta > 0:
            raise VaelabError(f"beta must be > 0, got {self.beta}")
        if self.mc_samples < 1:
            raise VaelabError(f"mc_samples must be >= 1, got {self.mc_samples}")
        if self.kl_warmup_steps < 0:
            raise VaelabError(f"kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")
        if self.free_bits < 0:
            raise VaelabError(f"free_bits must be >= 0 (nats per latent unit), got {self.free_bits}")
        if self.inner_latent_dim < 0 or any(w < 1 for w in self.inner_hidden):
            raise VaelabError(
                "inner_latent_dim must be >= 0 (0: one stochastic layer) and inner_hidden positive widths"
            )
        head.check(self.latent_dim)
        if self.inner_latent_dim:
            head.check(self.inner_latent_dim, "inner_latent_dim")
        if self.baseline and self.gradient_estimator != "score-function":
            raise VaelabError("baseline only applies to gradient_estimator=score-function")
        if self.baseline and self.mc_samples < 2:
            raise VaelabError(
                f"baseline is the mean of the other L - 1 draws: it needs mc_samples >= 2, got {self.mc_samples}"
            )
        if self.gradient_estimator == "score-function" and self.inner_latent_dim:
            raise VaelabError(
                "gradient_estimator=score-function needs a closed-form KL: use one stochastic layer, inner_latent_dim=0"
            )
        prior = PRIORS.get(self.prior)
        prior.check(self.prior_components)
        if self.gradient_estimator == "score-function" and not prior.closed_form:
            raise VaelabError(
                f"gradient_estimator=score-function needs a closed-form KL, which prior={self.prior} has not: "
                "use prior=standard or learned, or the reparameterization estimator"
            )
        if self.inner_latent_dim and self.prior != "standard":
            raise VaelabError(
                f"prior={self.prior} is a prior over one stochastic layer; two layers (inner_latent_dim > 0) use "
                "p(z) p(h|z) with p(z) = N(0, I): set prior=standard or inner_latent_dim=0"
            )


def _on_vectors(net: nn.Module, v: Tensor) -> Tensor:
    """Apply a (B, F) network over any leading dimensions of v (..., F), e.g. K samples of B data points."""
    return net(v.reshape(-1, v.shape[-1])).view(*v.shape[:-1], -1)


@MODELS.register(
    "vae", "variational autoencoder: Gaussian q(z|x), a registered prior p(z), ELBO with beta and L samples"
)
class VAE(VectorLatentModel):
    Config = VAEConfig
    generative = True
    config: VAEConfig

    def __init__(self, config: VAEConfig, data: DataSpec | tuple[int, ...]) -> None:
        inner = config.inner_latent_dim
        super().__init__(config, data, decoder_input=inner or config.latent_dim)  # p(x|z), or p(x|h) with two layers
        head = POSTERIORS.get(config.posterior)
        self.posterior = head(inner or config.latent_dim)  # q(z|x), or q(h|x) with two layers
        self.encoder = build_encoder(config, self.data_shape, self.posterior.num_params)
        self.latent_size = inner + config.latent_dim  # the vector encode/decode/sample speak in: z, or [h, z]
        data_range = LIKELIHOODS.get(config.likelihood).data_range
        self.latent_prior = PRIORS.get(config.prior).build(
            config.latent_dim, config.prior_components, self.data_shape, data_range
        )
        if inner:
            act = ACTIVATIONS[config.activation]
            self.upper_posterior = head(config.latent_dim)  # q(z|h)
            self.upper_encoder = MLPEncoder((inner,), self.upper_posterior.num_params, config.inner_hidden, act)
            self.lower_prior = DiagonalGaussian(inner)  # p(h|z)
            self.lower_decoder = MLPEncoder((config.latent_dim,), 2 * inner, config.inner_hidden[::-1], act)

    def posterior_of(self, x: Tensor) -> Distribution:
        """q(z|x) of the first stochastic layer (what the VampPrior evaluates at its pseudo-inputs)."""
        return self.posterior(self.encoder(x))

    def prior(self) -> Distribution:
        """p(z), or p(h, z) = p(z) p(h|z) with two stochastic layers."""
        top = self.latent_prior(self.posterior_of)
        if not self.config.inner_latent_dim:
            return top
        lower = self.config.inner_latent_dim
        return Chain(top, lambda z: self.lower_prior(_on_vectors(self.lower_decoder, z)), lower, flip=True)

    def prior_marginals(self) -> Distribution | None:
        """p(z_j) for each unit of a one-layer latent, batch shape (D,); None with two stochastic layers."""
        if self.config.inner_latent_dim:
            return None
        return self.latent_prior.marginals(self.posterior_of)

    def encode(self, x: Tensor) -> Distribution:
        q = self.posterior_of(x)
        if not self.config.inner_latent_dim:
            return q
        return Chain(q, lambda h: self.upper_posterior(_on_vectors(self.upper_encoder, h)), self.config.latent_dim)

    def decode(self, z: Tensor) -> Distribution:
        """p(x|z); with two layers the latent is [h, z] and x depends on h alone."""
        return super().decode(z[..., : self.config.inner_latent_dim or self.config.latent_dim])

    def code(self, x: Tensor) -> Tensor:
        return self.encode(x).mean

    def alternation_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(phi, theta): the encoders q(z|x) (and q(z|h)); every other parameter (decoders, prior, likelihood)."""
        encoders = [self.encoder, *([self.upper_encoder] if self.config.inner_latent_dim else [])]
        phi = [p for m in encoders for p in m.parameters() if p.requires_grad]
        ids = {id(p) for p in phi}
        return phi, [p for p in self.parameters() if p.requires_grad and id(p) not in ids]

    def kl_weight(self, step: int | None) -> float:
        warmup = self.config.kl_warmup_steps
        ramp = 1.0 if step is None or warmup == 0 else min(1.0, step / warmup)
        return self.config.beta * ramp

    def loss(self, x: Tensor, step: int | None = None) -> Loss:
        cfg = self.config
        if step is None:  # outside the trainer, which checks the whole training set once
            self.check_data(x)
        q, p = self.encode(x), self.prior()
        kl = None if cfg.inner_latent_dim else closed_form_kl(q, p)
        if kl is None:  # no closed form: both terms are averages over the same L draws (reparameterized)
            z = q.rsample((cfg.mc_samples,))
            log_px_z = self.decode(z).log_prob(x)
            kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
        else:
            estimator = ESTIMATORS.get(cfg.gradient_estimator)
            log_px_z = estimator(q, lambda z: self.decode(z).log_prob(x), cfg.mc_samples, cfg.baseline)  # (L, B)
        reconstruction = -log_px_z.mean()
        penalty, extra = self.regularizer(q, p, kl, step)
        kl_mean = kl.mean()
        terms = {"reconstruction": reconstruction, "kl": kl_mean, "elbo": -(reconstruction + kl_mean)}
        return Loss(reconstruction + penalty, {**terms, **extra})

    def regularizer(
        self, q: Distribution, p: Distribution, kl: Tensor, step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """What the loss adds to the reconstruction term, and any named terms of it; subclasses (beta-VAE variants)
        override only this. ``kl`` is the per-point KL(q(z|x) || p(z)) (B,)."""
        weight = self.kl_weight(step)
        penalty = self.kl_penalty(q, p, kl)
        return (penalty if weight == 1.0 else weight * penalty), {}

    def kl_penalty(self, q: Distribution, p: Distribution, kl: Tensor) -> Tensor:
        """The KL as the optimizer sees it. Free bits: sum_j max(lambda, KL_j), KL_j a batch mean, per unit j when q
        and p both factorize over the units (a diagonal posterior, the standard or learned prior), else over the
        latent as one group of lambda * D nats; units under it get no gradient."""
        lam = self.config.free_bits
        if lam == 0:
            return kl.mean()
        q_units, p_units = factorized(q), factorized(p)
        if q_units is not None and p_units is not None:
            return kl_divergence(q_units, p_units).mean(0).clamp(min=lam).sum()
        return kl.mean().clamp(min=lam * self.latent_size)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Means of p(x|z) for n draws z ~ p(z)."""
        return self.decode(self.prior().sample((n,))).mean

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, samples: int = 1000) -> Tensor:
        """The importance-weighted estimate of log p(x) per data point (a lower bound; K = samples)."""
        return importance_weighted_bound(x, self.encode(x), self.prior(), self.decode, samples)
