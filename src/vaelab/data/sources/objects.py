"""Your own data in Python: ``vaelab.train("vae", data=X)`` with X a tensor, a NumPy array or any torch ``Dataset``
yielding tensors or (tensor, label) pairs.

The object is written once, as an .npy file (with FILE.labels.npy), into the cache under the id of its contents
(``$VAELAB_CACHE/arrays/ID.npy``), and the run reads that file like ``--data FILE.npy``: config.json names it, so
``vaelab eval/sample/latents`` rebuild the data from any working directory, and streaming (memory-mapped) works for
data larger than memory. A Dataset is written item by item (never held whole); uint8 items stay uint8.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from numpy.lib.format import open_memmap

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data.download import cache_dir
from vaelab.data.sources.registry import OBJECT_SOURCES

FOLDER = "arrays"


def _as_array(x: Any, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise VaelabError(f"{where} is a {type(x).__name__}; items must be tensors or arrays (or (tensor, label))")
    return x


def _store(write, shape: tuple[int, ...], dtype: np.dtype, labels: np.ndarray | None) -> Path:
    """Write the array through ``write(memmap, hasher)`` to a temporary file, then move it to its content id."""
    folder = cache_dir() / FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{os.getpid()}.npy"
        out = open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    except OSError as e:
        raise VaelabError(
            f"cannot write the data into the cache {folder} ({e}); set VAELAB_CACHE to a writable folder"
        ) from None
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((shape, str(dtype))).encode())
    try:
        write(out, h)
        if labels is not None:
            h.update(b"labels" + np.ascontiguousarray(labels).tobytes())
        out.flush()
        del out
        final = folder / f"{h.hexdigest()}.npy"
        if labels is not None:
            np.save(final.with_suffix(".labels.npy"), labels)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


@OBJECT_SOURCES.register(np.ndarray)
def from_array(x: np.ndarray) -> Path:
    """An array (or a tensor's values) cached as an .npy file named by its contents."""
    if x.ndim < 2 or len(x) < 2:
        raise VaelabError(f"an array of shape {x.shape} is no data set; give (N, ...) with N >= 2 examples")

    def write(out: np.memmap, h: Any) -> None:
        out[...] = x
        h.update(np.ascontiguousarray(x).tobytes())

    return _store(write, x.shape, x.dtype, None)


@OBJECT_SOURCES.register(torch.Tensor)
def from_tensor(x: torch.Tensor) -> Path:
    return from_array(x.detach().cpu().numpy())


@OBJECT_SOURCES.register(torch.utils.data.Dataset)
def from_dataset(ds: torch.utils.data.Dataset) -> Path:
    """A map-style Dataset, item by item: tensors, or (tensor, label) pairs whose labels are kept."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise VaelabError(
            "the Dataset has no len(); give a map-style torch Dataset (or its items as one tensor)"
        ) from None
    if n < 2:
        raise VaelabError(f"the Dataset has {n} item(s); a data set needs at least two")

    def item(i: int) -> tuple[np.ndarray, int | None]:
        got = ds[i]
        label = None
        if isinstance(got, (tuple, list)):
            if len(got) != 2:
                raise VaelabError(f"item {i} of the Dataset is a {len(got)}-tuple; yield a tensor or (tensor, label)")
            got, label = got
            label = int(label)
        return _as_array(got, f"item {i} of the Dataset"), label

    first, first_label = item(0)
    labels = np.zeros(n, dtype=np.int64) if first_label is not None else None

    def write(out: np.memmap, h: Any) -> None:
        with Progress(n, "caching the Dataset", unit="items") as bar:
            for i in range(n):
                x, label = (first, first_label) if i == 0 else item(i)
                if x.shape != first.shape:
                    raise VaelabError(
                        f"item {i} of the Dataset has shape {x.shape}, item 0 {first.shape}; make them one"
                    )
                out[i] = x
                h.update(np.ascontiguousarray(x, dtype=first.dtype).tobytes())
                if labels is not None:
                    labels[i] = label
                bar.advance()

    return _store(write, (n, *first.shape), first.dtype, labels)
