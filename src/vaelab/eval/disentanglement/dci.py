"""DCI (Eastwood & Williams 2018): importance matrix R (D, K) from tree ensembles predicting each factor;
disentanglement = sum_d rho_d (1 - H_K(P_d.)), completeness = sum_k rho_k (1 - H_D(P_.k)), informativeness = mean test
accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.eval.disentanglement.base import METRICS, Encoder, entropy, rng_of, sample_codes, select_factors


def importance_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    model: str = "forest",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importances (D, K) of codes for each factor, and train/test accuracies (K,), from one classifier per factor.

    model: "forest" (random forest, fast) or "gbt" (gradient-boosted trees, as in disentanglement_lib).
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    if model not in ("forest", "gbt"):
        raise VaelabError(f"unknown DCI model {model!r}; use 'forest' or 'gbt'")
    importance = np.zeros((x_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = np.zeros(y_train.shape[1]), np.zeros(y_train.shape[1])
    for k in range(y_train.shape[1]):
        if model == "forest":
            clf = RandomForestClassifier(
                n_estimators=30, min_samples_leaf=2, max_features=None, random_state=seed, n_jobs=1
            )
        else:
            clf = GradientBoostingClassifier(n_estimators=30, random_state=seed)
        clf.fit(x_train, y_train[:, k])
        importance[:, k] = np.abs(clf.feature_importances_)
        train_acc[k] = clf.score(x_train, y_train[:, k])
        test_acc[k] = clf.score(x_test, y_test[:, k])
    return importance, train_acc, test_acc


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix (D codes, K factors)."""
    total = importance.sum()
    if total <= 0:
        return 0.0, 0.0
    d, k = importance.shape
    per_code = 1.0 - entropy(importance / np.maximum(importance.sum(axis=1, keepdims=True), 1e-12), k, axis=1)
    per_factor = 1.0 - entropy(importance / np.maximum(importance.sum(axis=0, keepdims=True), 1e-12), d, axis=0)
    disentanglement = float((per_code * importance.sum(axis=1) / total).sum())
    completeness = float((per_factor * importance.sum(axis=0) / total).sum())
    return disentanglement, completeness


@METRICS.register("dci", "Eastwood & Williams 2018: disentanglement, completeness, informativeness")
def dci_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    model: str = "forest",
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Eastwood & Williams 2018: disentanglement, completeness and informativeness (train and test accuracy)."""
    chosen = select_factors(source, factors)
    rng = rng_of(seed)
    x_train, y_train = sample_codes(source, encode, num_train, rng, 1024)
    x_test, y_test = sample_codes(source, encode, num_test, rng, 1024)
    importance, train_acc, test_acc = importance_matrix(
        x_train, y_train[:, chosen], x_test, y_test[:, chosen], model, seed=int(rng.integers(2**31))
    )
    disentanglement, completeness = dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(train_acc.mean()),
        "informativeness_test": float(test_acc.mean()),
    }
