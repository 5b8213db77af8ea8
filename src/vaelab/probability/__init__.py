"""Distributions the models are made of: likelihoods p(x|z), posteriors q(z|x), priors p(z), bounds, estimators,
and the corruption processes of denoising models."""

from vaelab.probability.bounds import importance_log_weights, importance_weighted_bound, log_mean_exp
from vaelab.probability.corruption import CORRUPTIONS, Corruption
from vaelab.probability.estimators import ESTIMATORS
from vaelab.probability.hierarchy import Chain
from vaelab.probability.likelihoods import LIKELIHOODS, Likelihood
from vaelab.probability.posteriors import POSTERIORS, Posterior, standard_normal
from vaelab.probability.priors import PRIORS, Prior, closed_form_kl, factorized, unit_normals

__all__ = [
    "CORRUPTIONS",
    "ESTIMATORS",
    "LIKELIHOODS",
    "POSTERIORS",
    "PRIORS",
    "Chain",
    "Corruption",
    "Likelihood",
    "Posterior",
    "Prior",
    "closed_form_kl",
    "factorized",
    "importance_log_weights",
    "importance_weighted_bound",
    "log_mean_exp",
    "standard_normal",
    "unit_normals",
]
