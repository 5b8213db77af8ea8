"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``evaluation/metrics/factor_vae.py`` with
``config/unsupervised_study_v1/metric_configs/factor_vae_metric.gin``:

- the global variance of each unit over ``num_variance_estimate`` = 10,000 points drawn uniformly with replacement,
  with ddof = 1 (``np.var(..., ddof=1)``, as the reference);
- pruning: a unit is kept when its global standard deviation is at least ``prune_threshold`` = 0.05
  (``prune_dims.threshold = 0.05``, the rule ``sqrt(var) >= threshold``); collapsed units would otherwise always
  have the least variance;
- a vote: one factor k drawn uniformly, ``batch_size`` = 64 points drawn uniformly with factor k set to the first
  point's value; the kept unit of least local variance (ddof = 1) over global variance votes for k;
- a majority-vote classifier unit -> factor from ``num_train`` = 10,000 votes, its accuracy on ``num_eval`` = 5,000
  fresh votes (``eval_accuracy``); chance is 1 / K.

The random draws come in the reference's order (the factor, then the batch), so with a shared random stream the
points are the reference's. One departure: ``num_active_dims`` is the number of kept units; the reference reports
the length of its mask, i.e. every unit. Before this protocol vaelab pruned on the variance (> 0.05, ddof 0);
``prune_threshold=0.05 ** 0.5`` comes close to that rule.
"""

from __future__ import annotations

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
    sample_codes,
    select_factors,
)

VOTES_PER_CALL = 16  # votes whose batches are encoded together (the random draws keep the reference's order)


def active_units(codes: np.ndarray, threshold: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(global variances (D,) with ddof 1, mask of the units kept: std >= threshold) of codes (N, D)."""
    variance = np.var(codes, axis=0, ddof=1)
    return variance, np.sqrt(variance) >= threshold


@METRICS.register("factorvae", "Kim & Mnih 2018: majority vote of the least-variance unit")
def factorvae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kim & Mnih 2018 as disentanglement_lib's factor_vae.py (see the module): majority-vote accuracy of "the kept
    unit of least normalised variance names the fixed factor"; keys train_accuracy, eval_accuracy, num_active_dims."""
    chosen = select_factors(source, factors)
    if batch_size < 2 or min(num_train, num_eval) < 1:
        raise VaelabError(f"factorvae needs batch_size >= 2 and at least one vote, got {batch_size}, {num_train}")
    rng = rng_of(seed)
    codes, _ = sample_codes(source, encode, num_variance_estimate, rng)
    variance, active = active_units(codes, prune_threshold)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    dims = np.flatnonzero(active)

    def votes(n: int) -> np.ndarray:
        table = np.zeros((codes.shape[1], len(chosen)), dtype=np.int64)  # unit x factor
        for start in range(0, n, VOTES_PER_CALL):
            labels, batches = [], []
            for _ in range(min(VOTES_PER_CALL, n - start)):
                label = int(rng.integers(0, len(chosen)))
                batch = source.sample_factors(batch_size, rng)
                batch[:, chosen[label]] = batch[0, chosen[label]]
                labels.append(label), batches.append(batch)
            z = encode_factors(source, encode, np.concatenate(batches)).reshape(len(labels), batch_size, -1)
            local = np.var(z[:, :, dims], axis=1, ddof=1) / variance[dims]
            np.add.at(table, (dims[np.argmin(local, axis=1)], labels), 1)
        return table

    train, test = votes(num_train), votes(num_eval)
    classifier = train.argmax(axis=1)  # unit -> factor
    rows = np.arange(len(classifier))
    return {
        "train_accuracy": float(train[rows, classifier].sum() / train.sum()),
        "eval_accuracy": float(test[rows, classifier].sum() / test.sum()),
        "num_active_dims": float(active.sum()),
    }


def factorvae_from_codes(
    codes: np.ndarray, factors: np.ndarray, seed: int | np.random.Generator = 0, **options: Any
) -> dict[str, float]:
    """The FactorVAE score of given codes (N, D), one per point of the factor grid (factor indices (N, K)); the
    votes are drawn from that grid as ``factorvae_score`` draws them (same options)."""
    return factorvae_score(CodeGrid(codes, factors), identity, seed=seed, **options)
