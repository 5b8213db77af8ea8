"""What every data source returns, and the registry that finds sources by name.

A source's arrays are NumPy arrays (or memory maps) or ``LazyArray``s that read rows on demand (a folder of
images, rendered sprites). Their dtype says how the values read: ``uint8`` is a grey level k/255, ``bool`` a binary
pixel, a float dtype the value itself. The data is held (or streamed) in that compact form and turned into float32
one batch at a time (``vaelab.data.storage``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.core.registry import Registry

DATA_ENV = "VAELAB_DATA"
CHUNK_BYTES = 64 << 20  # rows read at once when a whole array is scanned or copied


class LazyArray:
    """Rows read on demand: ``a[indices]`` (an int array or a slice) gives an ndarray of those rows.

    Subclasses set ``shape`` and ``dtype`` and implement ``rows(indices)``. Pickled into DataLoader workers, so a
    subclass keeps file handles out of its state."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (a 1-D int array), stacked."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.rows(np.arange(*key.indices(len(self))))
        if isinstance(key, (int, np.integer)):
            return self.rows(np.array([key]))[0]
        return self.rows(np.asarray(key, dtype=np.int64))


class Rows(LazyArray):
    """The rows ``indices`` of another array, read when asked (a split carved from a lazy or memory-mapped array)."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.shape, self.dtype = (len(self.indices), *base.shape[1:]), np.dtype(base.dtype)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        picked = self.indices[indices]
        order = np.argsort(picked, kind="stable")  # read a memory map in file order, hand back in the asked order
        out = np.asarray(self.base[picked[order]])
        result = np.empty_like(out)
        result[order] = out
        return result


def take(array: Any, indices: np.ndarray) -> Any:
    """Rows of an array: copied for an array in memory, a ``Rows`` view for a memory map or a lazy array."""
    if isinstance(array, np.ndarray) and not isinstance(array, np.memmap):
        return array[indices]
    return Rows(array, indices)


def chunk_rows(array: Any) -> int:
    """Rows of ``array`` in one block of about CHUNK_BYTES."""
    per_row = max(1, int(np.prod(array.shape[1:])) * np.dtype(array.dtype).itemsize)
    return max(1, CHUNK_BYTES // per_row)


def chunks(array: Any, rows: int | None = None):
    """(start, ndarray) blocks of about CHUNK_BYTES covering ``array``, in order."""
    step = rows or chunk_rows(array)
    for start in range(0, len(array), step):
        yield start, np.asarray(array[start : start + step])


@dataclass
class ImageArrays:
    """A data set as read from disk: images (N, C, H, W) in [0, 1] (uint8 k/255, bool, or float), labels if any.

    ``train``/``test``/``val`` may be memory maps or ``LazyArray``s; vectors are (N, D), sequences (N, T, C, H, W).
    ``shift``/``scale`` (tables) are what was subtracted and divided to standardize the columns."""

    train: Any
    test: Any
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    binary: bool = False  # already binarized on disk (a static binarization)
    val: Any = None  # the source's own validation split, used as is (else carved from train)
    val_labels: np.ndarray | None = None


Loader = Callable[..., ImageArrays]

#: name -> loader(data_dir, **options) returning ImageArrays. data_dir is None when the user gave no folder.
DATASETS: Registry[Loader] = Registry("data set")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder given on the command line, else $VAELAB_DATA, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None
