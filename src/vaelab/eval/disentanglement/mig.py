"""MIG (Chen et al. 2018): codes discretised into bins; I(z_d; v_k) / H(v_k), gap between the top two d."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.eval.disentanglement.base import METRICS, Encoder, rng_of, sample_codes, select_factors


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column of codes (N, D) into ``bins`` equal-width bins over its range: ints (N, D)."""
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


@METRICS.register("mig", "Chen 2018: mutual information gap")
def mig_score(
    source: Any,
    encode: Encoder,
    seed: int | np.random.Generator = 0,
    num_samples: int = 10_000,
    bins: int = 20,
    factors: Sequence[str] | None = None,
) -> dict[str, float]:
    """Chen et al. 2018: mean over factors of (I top1 - I top2) / H(v_k); also per factor as ``mig/<name>``."""
    from sklearn.metrics import mutual_info_score

    chosen = select_factors(source, factors)
    codes, truth = sample_codes(source, encode, num_samples, rng_of(seed), 1024)
    truth = truth[:, chosen]
    info = mutual_information(discretize(codes, bins), truth)
    entropy = np.array([mutual_info_score(truth[:, k], truth[:, k]) for k in range(truth.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    gaps = (top[0] - second) / np.maximum(entropy, 1e-12)
    result = {"mig": float(gaps.mean())}
    result.update({f"mig/{source.factor_names[k]}": float(g) for k, g in zip(chosen, gaps)})
    return result
