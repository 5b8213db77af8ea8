"""FactorVAE score (Kim & Mnih 2018): codes divided by their std over the data; in batches with factor k fixed, the
dimension of least variance votes for k; a majority-vote classifier dim -> factor. Chance 1 / K.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import METRICS, Encoder, encode_factors, rng_of, sample_codes, select_factors


@METRICS.register("factorvae", "Kim & Mnih 2018: majority vote of the least-variance unit")
def factorvae_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_variance: float = 0.05,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Kim & Mnih 2018: majority-vote accuracy of "the dim of least normalised variance names the fixed factor"."""
    chosen = select_factors(source, factors)
    rng = rng_of(seed)
    codes, _ = sample_codes(source, encode, num_variance_estimate, rng, 1024)
    variance = codes.var(axis=0)
    active = variance > prune_variance  # collapsed units would always have the least variance
    std = np.sqrt(np.where(active, variance, 1.0))
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    dims = np.flatnonzero(active)

    def votes(n: int) -> np.ndarray:
        table = np.zeros((codes.shape[1], len(chosen)), dtype=np.int64)
        for _ in range(n):
            label = rng.integers(0, len(chosen))
            z = encode_factors(source, encode, source.sample_fixed(chosen[label], batch_size, rng)) / std
            table[dims[np.argmin(z[:, dims].var(axis=0))], label] += 1
        return table

    train, test = votes(num_train), votes(num_eval)
    classifier = train.argmax(axis=1)  # dim -> factor
    rows = np.arange(len(classifier))
    return {
        "train_accuracy": float(train[rows, classifier].sum() / train.sum()),
        "eval_accuracy": float(test[rows, classifier].sum() / test.sum()),
        "num_active_dims": float(active.sum()),
    }
