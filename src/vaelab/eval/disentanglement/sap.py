"""SAP (Kumar et al. 2018): score matrix S (D, K): R^2 of a linear fit of v_k on z_d (ordinal factors) or the test
accuracy of thresholds on z_d (a depth-limited tree, categorical factors); mean over k of the gap between the top two d.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import METRICS, Encoder, rng_of, sample_codes, select_factors


def sap_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    categorical: Sequence[bool],
) -> np.ndarray:
    """Scores (D, K): R^2 of z_d -> v_k (ordinal, on the test set) or threshold accuracy (categorical)."""
    from sklearn.tree import DecisionTreeClassifier

    scores = np.zeros((x_train.shape[1], y_train.shape[1]))
    for k in range(y_train.shape[1]):
        for d in range(x_train.shape[1]):
            if categorical[k]:
                depth = max(1, int(np.ceil(np.log2(len(np.unique(y_train[:, k]))))))
                tree = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(x_train[:, d : d + 1], y_train[:, k])
                scores[d, k] = tree.score(x_test[:, d : d + 1], y_test[:, k])
            else:
                z, v = x_test[:, d], y_test[:, k].astype(np.float64)
                if z.std() > 0 and v.std() > 0:
                    scores[d, k] = np.corrcoef(z, v)[0, 1] ** 2
    return scores


@METRICS.register("sap", "Kumar 2018: separated attribute predictability")
def sap_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kumar et al. 2018: mean over factors of the gap between the two best single-code scores."""
    chosen = select_factors(source, factors)
    rng = rng_of(seed)
    x_train, y_train = sample_codes(source, encode, num_train, rng, 1024)
    x_test, y_test = sample_codes(source, encode, num_test, rng, 1024)
    categorical = source.categorical or (False,) * len(source.factor_sizes)
    scores = sap_matrix(x_train, y_train[:, chosen], x_test, y_test[:, chosen], [categorical[k] for k in chosen])
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    return {"sap": float((top[0] - second).mean())}
