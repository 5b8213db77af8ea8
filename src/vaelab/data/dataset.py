"""A data set prepared for training: train/val/test splits held as tensors on the device.

Batches are drawn by indexing with a permutation (no per-sample Python, no DataLoader workers).
Binarization for Bernoulli models is either ``fixed`` (sampled once) or ``dynamic`` (every time
an example is drawn for training); validation and test data are binarized once with a fixed seed,
so evaluation numbers are comparable across runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATASETS, ImageArrays, resolve_data_dir

BINARIZE = ("auto", "none", "dynamic", "fixed")
EVAL_BINARIZATION_SEED = 1234
SPLITS = ("train", "val", "test")
#: options of the generated (sequence) data sets, passed to their loaders; 0 keeps a data set's default
SOURCE_OPTIONS = ("frames", "frame_size", "digits", "sequences")


@dataclass(frozen=True)
class DataConfig:
    """Which data set to read and how: the ``data`` section of a run's config.json.

    ``name`` is a ``DATASETS`` entry; ``data_dir`` the folder with its files (else ``$VAELAB_DATA``, else the download
    cache); ``path`` and ``fingerprint`` a file a source reads and the id of its exact contents (``vq-codes``: the VQ
    run and its weights' id). ``val_fraction`` of the training set becomes the validation split (drawn by the run's
    seed); ``binarize`` is ``auto`` (dynamic binarization for a Bernoulli likelihood on grey-level data, else none),
    ``dynamic``, ``fixed`` or ``none``. ``frames``, ``frame_size``, ``digits`` and ``sequences`` size the generated
    sequence data sets (0 keeps a data set's default; a data set that has no such option refuses it).
    """

    name: str = "digits"
    data_dir: str | None = None  # folder with the files; else $VAELAB_DATA, else the download cache
    path: str | None = None  # a file or folder a source reads (vq-codes: the VQ run); relative: to the run folder
    fingerprint: str | None = None  # identifies the exact source data (vq-codes: the VQ weights' id)
    val_fraction: float = 0.1  # carved from the training set by the run's seed
    binarize: str = "auto"  # auto: dynamic for a Bernoulli likelihood on grey-level data, else none
    frames: int = 0  # sequence data sets: frames per sequence (0: the data set's default)
    frame_size: int = 0  # moving digits: height = width of a frame
    digits: int = 0  # moving digits: digits per sequence
    sequences: int = 0  # sequence data sets: training sequences (the test split gets a quarter as many)

    def __post_init__(self) -> None:
        accepted = DATASETS.entry(self.name).meta.get("options", ())  # generated data sets declare their options
        for key in SOURCE_OPTIONS:
            if getattr(self, key) < 0:
                raise VaelabError(f"{key} must be >= 0 (0 keeps the data set's default), got {getattr(self, key)}")
            if getattr(self, key) and key not in accepted:
                takers = [e.name for e in DATASETS if key in e.meta.get("options", ())]
                raise VaelabError(f"data set {self.name!r} has no option {key}; it applies to: {', '.join(takers)}")
        if self.binarize not in BINARIZE:
            raise VaelabError(f"unknown binarize {self.binarize!r}; choose from: {', '.join(BINARIZE)}")
        if not 0 <= self.val_fraction < 1:
            raise VaelabError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class Dataset:
    name: str
    shape: tuple[int, ...]
    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor | None
    val_labels: Tensor | None
    test_labels: Tensor | None
    dynamic: bool  # resample binary training data every time it is drawn
    kind: str = "images"  # images, vectors, sequences or codes (the models' DATA_KINDS)

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise VaelabError(f"unknown split {name!r}; choose from: {', '.join(SPLITS)}")
        return getattr(self, name)

    def labels(self, name: str) -> Tensor | None:
        self.split(name)
        return getattr(self, f"{name}_labels")

    def steps_per_epoch(self, batch_size: int) -> int:
        steps = len(self.train) // batch_size
        if steps == 0:
            raise VaelabError(f"batch size {batch_size} is larger than the training set ({len(self.train)} examples)")
        return steps

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1, skip: int = 0
    ) -> Iterator[Tensor]:
        """One epoch of shuffled batches (the last partial batch is dropped).

        Under data parallelism the global batch is ``batch_size * world`` and rank r takes its r-th
        slice, so N processes see exactly the batches one process with N times the batch would.
        ``skip`` resumes mid-epoch: the same permutation, minus the batches already done.
        """
        global_batch = batch_size * world
        steps = self.steps_per_epoch(global_batch)
        perm = torch.randperm(len(self.train), generator=generator).to(self.train.device, non_blocking=True)
        for i in range(skip, steps):
            idx = perm[i * global_batch + rank * batch_size : i * global_batch + (rank + 1) * batch_size]
            x = self.train[idx]
            yield torch.bernoulli(x) if self.dynamic else x

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Tensor]:
        data = self.split(split)
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]


def _binarize(x: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load_dataset(
    config: DataConfig,
    seed: int,
    device: torch.device | str = "cpu",
    binary_model: bool = False,
    root: str | os.PathLike | None = None,
) -> Dataset:
    """Read the data set, carve the validation split, binarize as configured, move to ``device``.

    ``root`` is the folder a relative ``config.path`` is relative to (the run folder)."""
    options = {key: getattr(config, key) for key in SOURCE_OPTIONS if getattr(config, key)}
    entry = DATASETS.entry(config.name)
    if entry.meta.get("takes_path"):
        path = None if config.path is None else Path(config.path).expanduser()
        if path is not None and not path.is_absolute() and root is not None:
            path = Path(root) / path
        options.update(path=path, fingerprint=config.fingerprint)
    arrays: ImageArrays = entry.obj(resolve_data_dir(config.data_dir), **options)
    mode = config.binarize
    if mode == "auto":  # grey levels in [0, 1] only: other data (e.g. signals) is left for the likelihood to refuse
        grey = arrays.train.min() >= 0 and arrays.train.max() <= 1
        mode = "dynamic" if binary_model and not arrays.binary and grey else "none"
    train, test = arrays.train.astype(np.float32), arrays.test.astype(np.float32)
    train_labels, val_labels = arrays.train_labels, arrays.val_labels
    if arrays.val is not None:  # the source's own validation split (val_fraction does not apply)
        val = arrays.val.astype(np.float32)
    else:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = round(config.val_fraction * len(train))
        val_idx, train_idx = order[:n_val], order[n_val:]
        val, train = train[val_idx], train[train_idx]
        if train_labels is not None:
            train_labels, val_labels = train_labels[train_idx], train_labels[val_idx]
    if mode != "none":
        if train.min() < 0 or train.max() > 1:
            raise VaelabError(f"binarization needs data in [0, 1]; {config.name} is in [{train.min()}, {train.max()}]")
        val, test = _binarize(val, EVAL_BINARIZATION_SEED), _binarize(test, EVAL_BINARIZATION_SEED + 1)
        if mode == "fixed":
            train = _binarize(train, EVAL_BINARIZATION_SEED + 2)

    def tensor(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Dataset(
        name=config.name,
        kind=entry.meta.get("kind", "images"),
        shape=tuple(train.shape[1:]),
        train=tensor(train),
        val=tensor(val),
        test=tensor(test),
        train_labels=tensor(train_labels),
        val_labels=tensor(val_labels),
        test_labels=tensor(arrays.test_labels),
        dynamic=mode == "dynamic",
    )
