"""SAP (Kumar et al. 2018), as disentanglement_lib's ``evaluation/metrics/sap_score.py`` (``_compute_sap``,
``compute_score_matrix``) with ``config/unsupervised_study_v1/metric_configs/sap_score.gin``:

- ``num_train`` = 10,000 training and ``num_test`` = 5,000 test points; here distinct grid points drawn without
  replacement (``distinct=True``; the reference draws both sets with replacement, ``distinct=False``);
- the study sets ``continuous_factors=False``: every factor is scored as discrete. S[d, k] is the test accuracy of
  scikit-learn's ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor k's index from code unit d alone,
  fitted on the training points (the classes are weighted to balance; the score is the plain accuracy, as the
  reference's ``np.mean(pred == y_test)``);
- ``continuous_factors=True``: the reference's other branch, S[d, k] = the squared correlation of z_d and v_k on the
  training points (0 where var(z_d) <= 1e-12);
- SAP = mean over factors of the gap between the two largest S[d, k] over d (the reference's ``SAP_score``).

Before this protocol vaelab scored ordinal factors by R^2 on the test points and categorical ones by a depth-limited
tree; that mixed rule is not kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import (
    METRICS,
    Encoder,
    check_codes,
    rng_of,
    sample_train_test,
    select_factors,
)


def sap_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    continuous_factors: bool = False,
) -> np.ndarray:
    """Scores (D, K): the test accuracy of a class-balanced linear SVM (C = 0.01) z_d -> v_k, or, with
    ``continuous_factors``, the squared correlation of z_d and v_k on the training points."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((x_train.shape[1], y_train.shape[1]))
    for d in range(x_train.shape[1]):
        for k in range(y_train.shape[1]):
            if continuous_factors:
                cov = np.cov(x_train[:, d], y_train[:, k].astype(np.float64), ddof=1)
                if cov[0, 0] > 1e-12:
                    scores[d, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            elif len(np.unique(y_train[:, k])) > 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    svm = LinearSVC(C=0.01, class_weight="balanced").fit(x_train[:, d : d + 1], y_train[:, k])
                scores[d, k] = np.mean(svm.predict(x_test[:, d : d + 1]) == y_test[:, k])
            else:
                scores[d, k] = np.mean(y_test[:, k] == y_train[0, k])
    return scores


def sap_from_codes(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> dict[str, float]:
    """SAP of given training codes (N, D) / factor indices (N, K) and test codes / factors: the reference's
    ``_compute_sap`` on the transposed arrays."""
    codes, factors = check_codes(codes, factors)
    codes_test, factors_test = check_codes(codes_test, factors_test, "test codes")
    top = np.sort(sap_matrix(codes, factors, codes_test, factors_test, continuous_factors), axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    return {"sap": float((top[0] - second).mean())}


@METRICS.register("sap", "Kumar 2018: separated attribute predictability")
def sap_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    continuous_factors: bool = False,
    distinct: bool = True,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kumar et al. 2018 as disentanglement_lib's sap_score.py in the unsupervised study (see the module): mean over
    factors of the gap between the two best single-unit linear-SVM accuracies."""
    chosen = select_factors(source, factors)
    rng = rng_of(seed)
    x_train, y_train, x_test, y_test = sample_train_test(source, encode, num_train, num_test, rng, distinct, "sap")
    return sap_from_codes(x_train, y_train[:, chosen], x_test, y_test[:, chosen], continuous_factors)
