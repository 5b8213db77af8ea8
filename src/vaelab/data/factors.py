"""Data sets with ground-truth generative factors: the interface the disentanglement metrics read.

A factor data set is a full grid of discrete factors (factor k takes ``factor_sizes[k]`` values) with one image per
grid point. Grid points are numbered in C order (the last factor varies fastest), as in the original dSprites file,
so ``index = ravel_multi_index(factors, factor_sizes)``.

The metrics need only: ``factor_names``, ``factor_sizes``, ``categorical``, ``sample_factors(n, rng)``,
``sample_fixed(k, n, rng)`` and ``render(factors)``; subclasses supply ``render`` (images from factor indices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from vaelab.core.errors import VaelabError


class FactorDataset:
    """A grid of discrete factors with an image per grid point; images are made lazily, a batch at a time."""

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    categorical: tuple[bool, ...] = ()  # unordered factors (e.g. shape); the others are ordinal

    # -- the grid ---------------------------------------------------------------------------------------------------

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def factor_index(self, factor: int | str) -> int:
        """The position of a factor given by name or position; VaelabError for an unknown one."""
        if isinstance(factor, str):
            if factor not in self.factor_names:
                raise VaelabError(f"unknown factor {factor!r}; this data set has: {', '.join(self.factor_names)}")
            return self.factor_names.index(factor)
        k = int(factor)
        if not 0 <= k < self.num_factors:
            raise VaelabError(f"factor {k} out of range; this data set has {self.num_factors} factors (0-based)")
        return k

    def index_to_factors(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Grid indices (N,) -> factor indices (N, K), int64."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise VaelabError(f"image index out of range [0, {len(self)})")
        return np.stack(np.unravel_index(indices, self.factor_sizes), axis=-1).astype(np.int64)

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices (N, K) -> grid indices (N,), int64."""
        factors = self._check_factors(factors)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes).astype(np.int64)

    def _check_factors(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise VaelabError(f"factors must have shape (N, {self.num_factors}), got {factors.shape}")
        if factors.size and ((factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any()):
            raise VaelabError(f"factor indices out of range; the factor sizes are {self.factor_sizes}")
        return factors

    # -- sampling ---------------------------------------------------------------------------------------------------

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n grid points drawn uniformly: factor indices (n, K)."""
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=-1).astype(np.int64)

    def sample_fixed(self, k: int | str, n: int, rng: np.random.Generator) -> np.ndarray:
        """n grid points sharing one random value of factor k, the other factors drawn uniformly: (n, K)."""
        k = self.factor_index(k)
        factors = self.sample_factors(n, rng)
        factors[:, k] = rng.integers(0, self.factor_sizes[k])
        return factors

    # -- images -----------------------------------------------------------------------------------------------------

    def render(self, factors: np.ndarray) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] for factor indices (N, K)."""
        raise NotImplementedError

    def images(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Images (N, C, H, W) for grid indices (N,)."""
        return self.render(self.index_to_factors(indices))

    def batches(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, factors) over the whole grid in index order, batch_size at a time."""
        for start in range(0, len(self), batch_size):
            indices = np.arange(start, min(start + batch_size, len(self)))
            factors = self.index_to_factors(indices)
            yield self.render(factors), factors


class FactorValues(FactorDataset):
    """A factor grid whose "images" are the factor indices themselves, scaled to [0, 1]: (N, K) float32.

    Metrics applied through an encoder on these see the ground truth (or any function of it) as the code, which is
    how the metrics are checked against known answers.
    """

    def __init__(self, factor_sizes: Sequence[int], names: Sequence[str] | None = None, categorical=None) -> None:
        if not factor_sizes or any(int(s) < 1 for s in factor_sizes):
            raise VaelabError(f"factor sizes must be positive, got {tuple(factor_sizes)}")
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.factor_names = tuple(names) if names is not None else tuple(f"f{k}" for k in range(len(factor_sizes)))
        self.categorical = tuple(categorical) if categorical is not None else (False,) * len(self.factor_sizes)

    def render(self, factors: np.ndarray) -> np.ndarray:
        factors = self._check_factors(factors)
        return (factors / np.maximum(np.asarray(self.factor_sizes) - 1, 1)).astype(np.float32)


class CachedGrid(FactorDataset):
    """Another (small) factor data set with every image drawn once and kept: the metrics then look images up instead
    of drawing them again (23,040 48x48 sprites: 212 MB)."""

    def __init__(self, source: FactorDataset, batch_size: int = 4096) -> None:
        self.factor_names, self.factor_sizes = source.factor_names, source.factor_sizes
        self.categorical = source.categorical
        self.grid = np.concatenate([images for images, _ in source.batches(batch_size)])

    def render(self, factors: np.ndarray) -> np.ndarray:
        return self.grid[self.factors_to_index(factors)]


#: data set name (as in DATASETS) -> the factor source its images come from, given the data folder: what the
#: disentanglement metrics of a run trained on that data set sample from. Registered by the data modules.
FACTOR_SOURCES: dict[str, Callable[[Path | None], FactorDataset]] = {}


def factor_source(data_name: str, data_dir: Path | None = None) -> FactorDataset:
    """The factor data set behind a registered data set; VaelabError naming those that have one otherwise."""
    if data_name not in FACTOR_SOURCES:
        raise VaelabError(
            f"data set {data_name!r} has no ground-truth factors; disentanglement metrics need a data set with "
            f"factors: {', '.join(sorted(FACTOR_SOURCES))}"
        )
    return FACTOR_SOURCES[data_name](data_dir)
