"""What every disentanglement metric shares: the factor source's interface, factor selection, sampling and encoding
codes, and the registry of metrics (``METRICS``: name -> function, one file per metric in this package).

``source`` is a factor data set (``vaelab.data.factors.FactorDataset``: factor_names, factor_sizes, categorical,
sample_factors, sample_fixed, render); ``encode(images) -> codes (N, D)`` (NumPy or torch) is the representation,
typically the posterior means. ``factors`` restricts a metric to some factors by name (default: every factor with
more than one value). A metric is ``fn(source, encode, seed=..., factors=..., **sizes) -> {name: float}``.

By default every metric follows google-research/disentanglement_lib's unsupervised study
(``evaluation/metrics/*.py`` with ``config/unsupervised_study_v1/metric_configs/*.gin``), point by point; each metric's
docstring names the reference file and states every protocol choice, and where ours departs. The one departure they
share: the train and test points of DCI and SAP are distinct grid points, drawn without replacement (``distinct``);
the reference draws both with replacement, which on a grid of 23,040 points (``dsprites-small``) puts about a third of
the 5,000 test points in the 10,000 training points. Each metric also has a ``*_from_codes`` entry point that scores
given codes, so it can be checked against the reference on the same inputs
(``benchmarks/disentanglement_reference.py``).
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
    """A NumPy Generator from a seed (or the Generator itself)."""
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


def sample_codes(source, encode, n: int, rng, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n, D) and factor indices (n, K) of n grid points drawn uniformly with replacement (the reference's
    ``ground_truth_data.sample``)."""
    if n < 2:
        raise VaelabError(f"need at least 2 samples, got {n}")
    factors = source.sample_factors(n, rng)
    return encode_factors(source, encode, factors, batch_size), factors


def sample_train_test(
    source: Any, encode: Encoder, num_train: int, num_test: int, rng: np.random.Generator, distinct: bool, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes_train, factors_train, codes_test, factors_test). ``distinct``: num_train + num_test different grid
    points drawn without replacement, so no test point is also a training point (VaelabError if the grid is
    smaller); otherwise two independent draws with replacement, as disentanglement_lib does."""
    if min(num_train, num_test) < 2:
        raise VaelabError(f"{metric} needs at least 2 training and 2 test points, got {num_train} and {num_test}")
    if not distinct:
        x_train, y_train = sample_codes(source, encode, num_train, rng)
        x_test, y_test = sample_codes(source, encode, num_test, rng)
        return x_train, y_train, x_test, y_test
    if num_train + num_test > len(source):
        raise VaelabError(
            f"{metric} needs {num_train + num_test} distinct grid points (num_train {num_train} + num_test "
            f"{num_test}) but the grid has {len(source)}; lower the sizes or sample with replacement (distinct=False)"
        )
    factors = source.index_to_factors(rng.choice(len(source), num_train + num_test, replace=False))
    codes = encode_factors(source, encode, factors)
    return codes[:num_train], factors[:num_train], codes[num_train:], factors[num_train:]


def check_codes(codes: np.ndarray, factors: np.ndarray, what: str = "codes") -> tuple[np.ndarray, np.ndarray]:
    """Codes (N, D) float64 and factors (N, K) int64 of the same N points; VaelabError otherwise."""
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise VaelabError(
            f"{what} must be (N, D) and factors (N, K) for the same N >= 2 points, got {codes.shape} and "
            f"{factors.shape}"
        )
    if not np.isfinite(codes).all():
        raise VaelabError(f"{what} are not all finite")
    return codes, factors.astype(np.int64)


class CodeGrid(FactorDataset):
    """A factor grid whose "images" are given codes, one per grid point: what ``betavae_from_codes`` and
    ``factorvae_from_codes`` sample from (with the identity as the encoder)."""

    def __init__(self, codes: np.ndarray, factors: np.ndarray, names: Sequence[str] | None = None) -> None:
        """codes (N, D) and factor indices (N, K) covering every point of the grid of sizes max(factors) + 1 once."""
        codes, factors = check_codes(codes, factors)
        if factors.min() < 0:
            raise VaelabError("factor indices must be >= 0")
        self.factor_sizes = tuple(int(s) for s in factors.max(axis=0) + 1)
        self.factor_names = tuple(names) if names is not None else tuple(f"f{k}" for k in range(factors.shape[1]))
        self.categorical = (False,) * factors.shape[1]
        index = np.ravel_multi_index(tuple(factors.T), self.factor_sizes)
        if len(codes) != len(self) or len(np.unique(index)) != len(self):
            raise VaelabError(
                f"these metrics sample from the whole grid: they need one code per grid point of the factor sizes "
                f"{self.factor_sizes} ({len(self)} points), got {len(codes)} codes for {len(np.unique(index))} points"
            )
        self.codes = np.empty_like(codes)
        self.codes[index] = codes

    def render(self, factors: np.ndarray) -> np.ndarray:
        return self.codes[self.factors_to_index(factors)]


def identity(codes: np.ndarray) -> np.ndarray:
    """The encoder of a ``CodeGrid``: its "images" are already codes."""
    return codes


def entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy in log-base ``base`` of distributions along ``axis`` (so 1 for uniform over base outcomes)."""
    p = np.clip(p, 1e-12, None)
    return -(p * np.log(p)).sum(axis=axis) / np.log(base) if base > 1 else np.zeros(p.shape[1 - axis])
