"""Distributions the models are made of: likelihoods p(x|z), posteriors q(z|x), priors p(z), bounds."""

from vaelab.probability.bounds import importance_weighted_bound
from vaelab.probability.likelihoods import LIKELIHOODS, Likelihood
from vaelab.probability.posteriors import POSTERIORS, Posterior, standard_normal

__all__ = [
    "LIKELIHOODS",
    "POSTERIORS",
    "Likelihood",
    "Posterior",
    "importance_weighted_bound",
    "standard_normal",
]
