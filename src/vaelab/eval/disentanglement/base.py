"""What every disentanglement metric shares: the factor source's interface, factor selection, sampling and encoding
codes, and the registry of metrics (``METRICS``: name -> function, one file per metric in this package).

``source`` is a factor data set (``vaelab.data.factors.FactorDataset``: factor_names, factor_sizes, categorical,
sample_factors, sample_fixed, render); ``encode(images) -> codes (N, D)`` (NumPy or torch) is the representation,
typically the posterior means. ``factors`` restricts a metric to some factors by name (default: every factor with
more than one value). A metric is ``fn(source, encode, seed=..., factors=..., **sizes) -> {name: float}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry
from vaelab.data.factors import FactorDataset

Encoder = Callable[[np.ndarray], Any]
Metric = Callable[..., dict[str, float]]

#: name -> metric function; the metric files register themselves
METRICS: Registry[Metric] = Registry("disentanglement metric")


def check_source(source: object) -> None:
    """VaelabError unless ``source`` is a data set with ground-truth factors (a ``FactorDataset``)."""
    if not isinstance(source, FactorDataset) or not source.factor_sizes:
        raise VaelabError(
            f"{type(source).__name__} has no ground-truth factors; disentanglement metrics need a data set with "
            "factors (a vaelab.data.factors.FactorDataset) such as dsprites"
        )


def select_factors(source: Any, factors: Sequence[str] | None = None) -> list[int]:
    """Positions of the named factors (default: every factor with more than one value); VaelabError if unknown."""
    check_source(source)
    names = list(source.factor_names)
    if factors is None:
        chosen = [k for k, size in enumerate(source.factor_sizes) if size > 1]
    else:
        if isinstance(factors, str):
            factors = [factors]
        unknown = [f for f in factors if f not in names]
        if unknown:
            raise VaelabError(f"unknown factor {unknown[0]!r}; this data set has: {', '.join(names)}")
        chosen = [names.index(f) for f in factors]
        single = [names[k] for k in chosen if source.factor_sizes[k] < 2]
        if single:
            raise VaelabError(f"factor {single[0]!r} takes a single value; no metric can be measured on it")
    if not chosen:
        raise VaelabError("no factor with more than one value to measure")
    return chosen


def rng_of(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def encode_factors(source: Any, encode: Encoder, factors: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Codes (N, D) float64 of the images at factor indices (N, K), rendered and encoded batch_size at a time."""
    codes = []
    for start in range(0, len(factors), batch_size):
        z = encode(source.render(factors[start : start + batch_size]))
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().numpy()
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or len(z) != len(factors[start : start + batch_size]):
            raise VaelabError(f"encode must return codes of shape (N, D) for N images, got {z.shape}")
        codes.append(z)
    codes = np.concatenate(codes)
    if not np.isfinite(codes).all():
        raise VaelabError("encode returned non-finite codes")
    return codes


def sample_codes(source, encode, n: int, rng, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise VaelabError(f"need at least 2 samples, got {n}")
    factors = source.sample_factors(n, rng)
    return encode_factors(source, encode, factors, batch_size), factors


def entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy in log-base ``base`` of distributions along ``axis`` (so 1 for uniform over base outcomes)."""
    p = np.clip(p, 1e-12, None)
    return -(p * np.log(p)).sum(axis=axis) / np.log(base) if base > 1 else np.zeros(p.shape[1 - axis])
