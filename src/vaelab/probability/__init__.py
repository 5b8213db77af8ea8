"""Distributions the models are made of: likelihoods p(x|z), posteriors q(z|x), priors p(z), bounds, estimators."""

from vaelab.probability.bounds import importance_log_weights, importance_weighted_bound, log_mean_exp
from vaelab.probability.estimators import ESTIMATORS
from vaelab.probability.hierarchy import Chain
from vaelab.probability.likelihoods import LIKELIHOODS, Likelihood
from vaelab.probability.posteriors import POSTERIORS, Posterior, standard_normal

__all__ = [
    "ESTIMATORS",
    "LIKELIHOODS",
    "POSTERIORS",
    "Chain",
    "Likelihood",
    "Posterior",
    "importance_log_weights",
    "importance_weighted_bound",
    "log_mean_exp",
    "standard_normal",
]
