"""Disentanglement metrics, one file each, found by name through ``METRICS``: betavae, factorvae, mig, dci, sap.

``all_metrics`` runs several with one seed; ``run_disentanglement`` scores a trained run (``vaelab disentanglement``).
"""

from vaelab.eval.disentanglement import betavae, dci, factorvae, mig, sap  # noqa: F401  (registration)
from vaelab.eval.disentanglement.base import (
    METRICS,
    check_source,
    encode_factors,
    entropy,
    rng_of,
    sample_codes,
    select_factors,
)
from vaelab.eval.disentanglement.betavae import betavae_score
from vaelab.eval.disentanglement.dci import dci_from_importance, dci_score, importance_matrix
from vaelab.eval.disentanglement.factorvae import factorvae_score
from vaelab.eval.disentanglement.mig import discretize, mig_score, mutual_information
from vaelab.eval.disentanglement.run import QUICK_SIZES, all_metrics, disentanglement_report_name, run_disentanglement
from vaelab.eval.disentanglement.sap import sap_matrix, sap_score

__all__ = [
    "METRICS",
    "QUICK_SIZES",
    "all_metrics",
    "betavae_score",
    "check_source",
    "dci_from_importance",
    "dci_score",
    "discretize",
    "disentanglement_report_name",
    "encode_factors",
    "entropy",
    "factorvae_score",
    "importance_matrix",
    "mig_score",
    "mutual_information",
    "rng_of",
    "run_disentanglement",
    "sample_codes",
    "sap_matrix",
    "sap_score",
    "select_factors",
]
