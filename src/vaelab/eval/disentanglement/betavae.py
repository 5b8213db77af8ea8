"""BetaVAE score (Higgins et al. 2017): a point is the mean |z1 - z2| over pairs that share one random factor k;
a logistic regression predicts k. Chance is 1 / K.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import METRICS, Encoder, encode_factors, rng_of, select_factors


@METRICS.register("betavae", "Higgins 2017: linear classifier names the fixed factor")
def betavae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Higgins et al. 2017: accuracy of a linear classifier naming the fixed factor from mean |z1 - z2|."""
    from sklearn.linear_model import LogisticRegression

    chosen = select_factors(source, factors)
    rng = rng_of(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, len(chosen), n)
        feats = []
        for label in labels:
            k = chosen[label]
            f1 = source.sample_factors(batch_size, rng)
            f2 = source.sample_factors(batch_size, rng)
            f2[:, k] = f1[:, k]
            z = encode_factors(source, encode, np.concatenate([f1, f2]))
            feats.append(np.abs(z[:batch_size] - z[batch_size:]).mean(axis=0))
        return np.stack(feats), labels

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    if len(np.unique(y_train)) < 2:
        accuracy = float(np.mean(y_eval == y_train[0]))
        return {"train_accuracy": float(np.mean(y_train == y_train[0])), "eval_accuracy": accuracy}
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
    }
