"""BetaVAE score (Higgins et al. 2017), as disentanglement_lib's ``evaluation/metrics/beta_vae.py``
(``compute_beta_vae_sklearn``) with ``config/unsupervised_study_v1/metric_configs/beta_vae_sklearn.gin``:

- a point: one factor k drawn uniformly, two batches of ``batch_size`` = 64 points drawn uniformly with the second's
  factor k set to the first's; its features are the mean over the batch of |z1 - z2| (D,) and its label is k;
- ``num_train`` = 10,000 training points, ``num_eval`` = 5,000 evaluation points drawn afresh;
- the classifier is scikit-learn's ``LogisticRegression`` with its defaults (lbfgs, C = 1, 100 iterations;
  convergence warnings are silenced as they go to the reference's log); ``eval_accuracy`` is its accuracy on the
  evaluation points. Chance is 1 / K.

The random draws come in the reference's order (the factor, then the two batches). Before this protocol vaelab fitted
the regression with 2,000 iterations: ``max_iter=2000`` brings that back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.eval.disentanglement.base import (
    METRICS,
    CodeGrid,
    Encoder,
    encode_factors,
    identity,
    rng_of,
    select_factors,
)

POINTS_PER_CALL = 8  # points whose batches are encoded together (the random draws keep the reference's order)


def betavae_points(
    source: Any, encode: Encoder, n: int, batch_size: int, rng: np.random.Generator, chosen: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, D) = mean |z1 - z2| over pairs sharing one factor, and labels (n,): positions in ``chosen``."""
    feats, labels = [], []
    for start in range(0, n, POINTS_PER_CALL):
        batches, count = [], min(POINTS_PER_CALL, n - start)
        for _ in range(count):
            label = int(rng.integers(0, len(chosen)))
            f1 = source.sample_factors(batch_size, rng)
            f2 = source.sample_factors(batch_size, rng)
            f2[:, chosen[label]] = f1[:, chosen[label]]
            batches += [f1, f2]
            labels.append(label)
        z = encode_factors(source, encode, np.concatenate(batches)).reshape(count, 2, batch_size, -1)
        feats.append(np.abs(z[:, 0] - z[:, 1]).mean(axis=1))
    return np.concatenate(feats), np.asarray(labels, dtype=np.int64)


def betavae_from_features(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, max_iter: int = 100
) -> dict[str, float]:
    """Train and evaluation accuracy of scikit-learn's LogisticRegression (defaults; ``max_iter``) on given points."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) < 2:  # one class: LogisticRegression refuses; the constant guess is the classifier
        return {
            "train_accuracy": float(np.mean(y_train == y_train[0])),
            "eval_accuracy": float(np.mean(y_eval == y_train[0])),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=max_iter).fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)), "eval_accuracy": float(model.score(x_eval, y_eval))}


@METRICS.register("betavae", "Higgins 2017: linear classifier names the fixed factor")
def betavae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    max_iter: int = 100,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Higgins et al. 2017 as disentanglement_lib's beta_vae.py (see the module): accuracy of a logistic regression
    naming the fixed factor from mean |z1 - z2|; keys train_accuracy, eval_accuracy."""
    chosen = select_factors(source, factors)
    if batch_size < 1 or min(num_train, num_eval) < 1:
        raise VaelabError(f"betavae needs batch_size >= 1 and at least one point, got {batch_size}, {num_train}")
    rng = rng_of(seed)
    x_train, y_train = betavae_points(source, encode, num_train, batch_size, rng, chosen)
    x_eval, y_eval = betavae_points(source, encode, num_eval, batch_size, rng, chosen)
    return betavae_from_features(x_train, y_train, x_eval, y_eval, max_iter)


def betavae_from_codes(
    codes: np.ndarray, factors: np.ndarray, seed: int | np.random.Generator = 0, **options: Any
) -> dict[str, float]:
    """The BetaVAE score of given codes (N, D), one per point of the factor grid (factor indices (N, K)); the points
    are drawn from that grid as ``betavae_score`` draws them (same options)."""
    return betavae_score(CodeGrid(codes, factors), identity, seed=seed, **options)
