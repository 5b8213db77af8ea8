"""Disentanglement metrics, one file each, found by name through ``METRICS``: betavae, factorvae, mig, dci, sap.

By default each follows google-research/disentanglement_lib's unsupervised study point by point (see each module);
``*_from_codes`` score given codes, so they can be set beside the reference on the same inputs.

``all_metrics`` runs several with one seed; ``run_disentanglement`` scores a trained run (``vaelab disentanglement``).
"""

from vaelab.eval.disentanglement import betavae, dci, factorvae, mig, sap  # noqa: F401  (registration)
from vaelab.eval.disentanglement.base import (
    METRICS,
    CodeGrid,
    check_codes,
    check_source,
    encode_factors,
    entropy,
    identity,
    rng_of,
    sample_codes,
    sample_train_test,
    select_factors,
)
from vaelab.eval.disentanglement.betavae import betavae_from_codes, betavae_from_features, betavae_points, betavae_score
from vaelab.eval.disentanglement.dci import dci_from_codes, dci_from_importance, dci_score, importance_matrix
from vaelab.eval.disentanglement.factorvae import active_units, factorvae_from_codes, factorvae_score
from vaelab.eval.disentanglement.mig import discretize, mig_from_codes, mig_score, mutual_information
from vaelab.eval.disentanglement.run import (
    HEADLINE_SCORES,
    QUICK_SIZES,
    all_metrics,
    disentanglement_report_name,
    run_disentanglement,
)
from vaelab.eval.disentanglement.sap import sap_from_codes, sap_matrix, sap_score

__all__ = [
    "HEADLINE_SCORES",
    "METRICS",
    "QUICK_SIZES",
    "CodeGrid",
    "active_units",
    "all_metrics",
    "betavae_from_codes",
    "betavae_from_features",
    "betavae_points",
    "betavae_score",
    "check_codes",
    "check_source",
    "dci_from_codes",
    "dci_from_importance",
    "dci_score",
    "discretize",
    "disentanglement_report_name",
    "encode_factors",
    "entropy",
    "factorvae_from_codes",
    "factorvae_score",
    "identity",
    "importance_matrix",
    "mig_from_codes",
    "mig_score",
    "mutual_information",
    "rng_of",
    "run_disentanglement",
    "sample_codes",
    "sample_train_test",
    "sap_from_codes",
    "sap_matrix",
    "sap_score",
    "select_factors",
]
