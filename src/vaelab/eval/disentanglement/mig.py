"""MIG (Chen et al. 2018), as disentanglement_lib's ``evaluation/metrics/mig.py`` (``_compute_mig``) with
``config/unsupervised_study_v1/metric_configs/mig.gin``:

- ``num_samples`` = 10,000 points drawn uniformly with replacement (``mig.num_train``; one sample set, no test set);
- each code unit discretized into ``bins`` = 20 equal-width bins over its range on those points
  (``histogram_discretizer``, ``utils._histogram_discretize``: ``np.digitize`` on ``np.histogram``'s edges; the
  largest value falls in the last bin);
- I(z_d; v_k) by scikit-learn's ``mutual_info_score`` (nats), H(v_k) = I(v_k; v_k);
- MIG = mean over factors of (largest I - second largest I) / H(v_k) (the reference's ``discrete_mig``; per factor as
  ``mig/<name>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import METRICS, Encoder, check_codes, rng_of, sample_codes, select_factors


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of codes (N, D) into ``bins`` equal-width bins over its range: ints (N, D) in [0, bins).

    The same partition as disentanglement_lib's ``_histogram_discretize`` (whose bin numbers start at 1)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, d], bins)
        out[:, d] = np.digitize(codes[:, d], edges[1:-1])
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(code_d; factor_k) in nats for discrete codes (N, D) and factors (N, K): (D, K)."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [
            [mutual_info_score(factors[:, k], codes[:, d]) for k in range(factors.shape[1])]
            for d in range(codes.shape[1])
        ]
    )


def mig_from_codes(
    codes: np.ndarray, factors: np.ndarray, bins: int = 20, names: Sequence[str] | None = None
) -> dict[str, float]:
    """MIG of given codes (N, D) and factor indices (N, K) of the same points: ``mig`` and ``mig/<name>`` (names
    default to f0, f1, ...); the reference's ``_compute_mig`` on the transposed arrays."""
    from sklearn.metrics import mutual_info_score

    codes, factors = check_codes(codes, factors)
    names = list(names) if names is not None else [f"f{k}" for k in range(factors.shape[1])]
    info = mutual_information(discretize(codes, bins), factors)
    entropy = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    gaps = (top[0] - second) / np.maximum(entropy, 1e-12)
    return {"mig": float(gaps.mean()), **{f"mig/{name}": float(g) for name, g in zip(names, gaps)}}


@METRICS.register("mig", "Chen 2018: mutual information gap")
def mig_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_samples: int = 10_000,
    bins: int = 20,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Chen et al. 2018 as disentanglement_lib's mig.py (see the module): mean over factors of
    (I top1 - I top2) / H(v_k), 20 equal-width bins; also per factor as ``mig/<name>``."""
    chosen = select_factors(source, factors)
    codes, truth = sample_codes(source, encode, num_samples, rng_of(seed))
    return mig_from_codes(codes, truth[:, chosen], bins, [source.factor_names[k] for k in chosen])
