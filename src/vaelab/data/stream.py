"""The streaming path: a split too large for the memory budget is read from disk by a torch ``DataLoader``.

The trainer asks for the very index batches it would gather on the device (the same permutation, the same DDP
slice, the same mid-epoch skip); worker processes read those rows (decode the images, read the memory map) in their
compact dtype, the batch is pinned, copied to the device without blocking, and decoded there, ``prefetch`` batches
ahead per worker. So a streamed run draws the same examples in the same order as a run held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.data.storage import decode

PREFETCH = 4  # batches each worker reads ahead


class _Rows(torch.utils.data.Dataset):
    """A DataLoader's view of a lazy array: ``__getitems__`` reads a whole batch of rows at once."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitems__(self, indices: list[int]) -> Tensor:
        rows = np.asarray(self.array[np.asarray(indices, dtype=np.int64)])
        return torch.from_numpy(rows.view(np.uint8) if rows.dtype == np.bool_ else np.ascontiguousarray(rows))


def _as_batch(rows: Tensor) -> Tensor:
    return rows


def default_workers(world: int = 1) -> int:
    """Loader processes when ``data.workers`` is -1: the CPU cores less one, shared by the ranks, at most 8."""
    return max(1, min(8, ((os.cpu_count() or 2) - 1) // max(1, world)))


class StreamSplit:
    """A split read from disk a batch at a time (see the module docstring)."""

    streamed = True

    def __init__(
        self, array: Any, encoding: str, lo: float, hi: float, device: torch.device | str, workers: int
    ) -> None:
        self.array, self.encoding, self.shape = array, encoding, tuple(array.shape[1:])
        self.value_range = (lo, hi)
        self.device, self.workers = torch.device(device), workers
        # the rows arrive in their own dtype (uint8, bool as 0/1 bytes, float); decoding needs to know which
        self._raw = "float32" if np.issubdtype(np.dtype(array.dtype), np.floating) else encoding
        if self._raw == "bits":
            self._raw = "bool"

    def __len__(self) -> int:
        return len(self.array)

    nbytes = 0  # nothing of it is held on the device

    def _loader(self, index_batches: Sequence[Sequence[int]]) -> torch.utils.data.DataLoader:
        workers = self.workers if len(index_batches) > 1 else 0
        return torch.utils.data.DataLoader(
            _Rows(self.array),
            batch_sampler=index_batches,
            num_workers=workers,
            collate_fn=_as_batch,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=PREFETCH if workers else None,
            generator=torch.Generator(),  # its worker seed must not come from (and shift) the training RNG
        )

    def _decode(self, raw: Tensor) -> Tensor:
        raw = raw.to(self.device, non_blocking=True).reshape(len(raw), -1)
        if self._raw == "bool":
            return raw.float().reshape(len(raw), *self.shape)
        return decode(raw, "uint8" if self._raw == "uint8" else "float32", self.shape)

    def batches(self, index_batches: Sequence[Tensor]) -> Iterator[Tensor]:
        """Decoded batches for index tensors, read ahead by the workers."""
        lists = [idx.tolist() for idx in index_batches]
        if not lists:
            return
        try:
            for raw in self._loader(lists):
                yield self._decode(raw)
        except VaelabError as e:  # raised in a worker: the DataLoader wraps it in a traceback; keep its one line
            raise VaelabError(
                str(e).strip().splitlines()[-1].removeprefix("vaelab.core.errors.VaelabError: ")
            ) from None

    def ranges(self, batch_size: int) -> Iterator[Tensor]:
        """Decoded batches in order, ``batch_size`` at a time."""
        n = len(self.array)
        yield from self.batches([torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)])

    def head(self, n: int) -> Tensor:
        return self._decode(_Rows(self.array).__getitems__(list(range(min(n, len(self.array))))))

    def all(self) -> Tensor:
        parts = list(self.ranges(4096))
        return torch.cat(parts) if parts else torch.empty(0, *self.shape, device=self.device)
