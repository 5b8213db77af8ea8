"""DCI (Eastwood & Williams 2018), as disentanglement_lib's ``evaluation/metrics/dci.py`` (``_compute_dci``,
``compute_importance_gbt``) with ``config/unsupervised_study_v1/metric_configs/dci.gin``:

- ``num_train`` = 10,000 training and ``num_test`` = 5,000 test points; here distinct grid points drawn without
  replacement (``distinct=True``; the reference draws both sets with replacement, ``distinct=False``);
- the importance matrix R (D, K): for each factor (its discrete index as the class) scikit-learn's
  ``GradientBoostingClassifier`` with its defaults (100 trees of depth 3, learning rate 0.1) fitted on the training
  codes; R[:, k] = |feature_importances_| (``model="gbt"``; ``model="forest"`` is vaelab's earlier, faster random
  forest of 30 trees, not the reference's);
- disentanglement = sum_d rho_d (1 - H_K(P_d.)), completeness = sum_k rho_k (1 - H_D(P_.k)), with P the rows
  (columns) of R normalised and rho their share of R's total, entropies in base K (D) of R + 1e-11 as the
  reference's ``scipy.stats.entropy``;
- informativeness = the mean over factors of the classifier's accuracy on the training points
  (``informativeness_train``) and on the test points (``informativeness_test``).

The reference's trees are unseeded (their only randomness is the order in which tied features are tried); ours take
a seed drawn from the metric's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.eval.disentanglement.base import (
    METRICS,
    Encoder,
    check_codes,
    rng_of,
    sample_train_test,
    select_factors,
)

MODELS = ("gbt", "forest")


def importance_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    model: str = "gbt",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importances (D, K) of codes for each factor, and train/test accuracies (K,), from one classifier per factor.

    model: "gbt" (scikit-learn's GradientBoostingClassifier with its defaults, as disentanglement_lib) or "forest"
    (a random forest of 30 trees, min_samples_leaf 2: vaelab's earlier, faster choice).
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if model not in MODELS:
        raise VaelabError(f"unknown DCI model {model!r}; use one of: {', '.join(MODELS)}")
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = np.zeros(y_train.shape[1]), np.zeros(y_train.shape[1])
    for k in range(y_train.shape[1]):
        if model == "gbt":
            clf = GradientBoostingClassifier(random_state=seed)
        else:
            clf = RandomForestClassifier(
                n_estimators=30, min_samples_leaf=2, max_features=None, random_state=seed, n_jobs=1
            )
        clf.fit(x_train, y_train[:, k])
        importance[:, k] = np.abs(clf.feature_importances_)
        train_acc[k] = np.mean(clf.predict(x_train) == y_train[:, k])
        test_acc[k] = np.mean(clf.predict(x_test) == y_test[:, k])
    return importance, train_acc, test_acc


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix (D codes, K factors), as the reference computes them
    (entropies of R + 1e-11; a matrix of zeros weighs every code and factor alike)."""
    from scipy.stats import entropy

    d, k = importance.shape
    per_code = 1.0 - entropy(importance.T + 1e-11, base=k) if k > 1 else np.ones(d)
    per_factor = 1.0 - entropy(importance + 1e-11, base=d) if d > 1 else np.ones(k)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    disentanglement = float((per_code * weights.sum(axis=1) / weights.sum()).sum())
    completeness = float((per_factor * weights.sum(axis=0) / weights.sum()).sum())
    return disentanglement, completeness


def dci_from_codes(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    model: str = "gbt",
    seed: int = 0,
) -> dict[str, float]:
    """DCI of given training codes (N, D) / factor indices (N, K) and test codes / factors (M, D) / (M, K): the
    reference's ``_compute_dci`` on the transposed arrays."""
    codes, factors = check_codes(codes, factors)
    codes_test, factors_test = check_codes(codes_test, factors_test, "test codes")
    importance, train_acc, test_acc = importance_matrix(codes, factors, codes_test, factors_test, model, seed)
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(train_acc.mean()),
        "informativeness_test": float(test_acc.mean()),
    }


@METRICS.register("dci", "Eastwood & Williams 2018: disentanglement, completeness, informativeness")
def dci_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    model: str = "gbt",
    distinct: bool = True,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Eastwood & Williams 2018 as disentanglement_lib's dci.py (see the module): disentanglement, completeness and
    informativeness (train and test accuracy) from gradient-boosted-tree importances."""
    chosen = select_factors(source, factors)
    if model not in MODELS:
        raise VaelabError(f"unknown DCI model {model!r}; use one of: {', '.join(MODELS)}")
    rng = rng_of(seed)
    x_train, y_train, x_test, y_test = sample_train_test(source, encode, num_train, num_test, rng, distinct, "dci")
    return dci_from_codes(x_train, y_train[:, chosen], x_test, y_test[:, chosen], model, int(rng.integers(2**31)))
