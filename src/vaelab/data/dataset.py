"""A data set prepared for training: train/val/test splits held compactly on the device, or streamed from disk.

Batches are drawn by indexing with a permutation. Held on the device (``DeviceSplit``), a split is gathered there
in its compact encoding (uint8 grey levels, packed bits, float32) and decoded per batch; past the memory budget
(``data.memory_budget``) it is streamed (``StreamSplit``): DataLoader workers read the very same index batches from
disk. Binarization for Bernoulli models is either ``fixed`` (sampled once) or ``dynamic`` (every time an example is
drawn for training); validation and test data are binarized once with a fixed seed (and then held as bits), so
evaluation numbers are comparable across runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATASETS, ImageArrays, chunks, resolve_data_dir, take
from vaelab.data.storage import DeviceSplit, Scan, row_bytes, scan
from vaelab.data.stream import StreamSplit, default_workers

BINARIZE = ("auto", "none", "dynamic", "fixed")
EVAL_BINARIZATION_SEED = 1234
SPLITS = ("train", "val", "test")
#: options of the generated (sequence) data sets and of image folders, passed to their loaders; 0 keeps the default
SOURCE_OPTIONS = ("frames", "frame_size", "digits", "sequences", "image_size", "channels", "images")
BUDGET_SHARE = 0.5  # data.memory_budget 0: this share of the device's free memory


@dataclass(frozen=True)
class DataConfig:
    """Which data set to read and how: the ``data`` section of a run's config.json.

    ``name`` is a ``DATASETS`` entry (your own data: ``image-folder``, ``image-array``, ``vector-array``, ``table``,
    set from ``--data PATH``); ``data_dir`` the folder with its files (else ``$VAELAB_DATA``, else the download
    cache); ``path`` and ``fingerprint`` the file or folder a source reads and the id of its exact contents
    (``vq-codes``: the VQ run and its weights' id). ``val_fraction`` of the training set becomes the validation
    split, ``test_fraction`` of your own data the test split when it has none (both drawn by the run's seed);
    ``binarize`` is ``auto`` (dynamic binarization for a Bernoulli likelihood on grey-level data, else none),
    ``dynamic``, ``fixed`` or ``none``. ``frames``, ``frame_size``, ``digits`` and ``sequences`` size the generated
    sequence data sets, ``image_size`` (resize, then center-crop to a square) and ``channels`` (1 grey, 3 colour)
    shape image folders, ``images`` is how many of dSprites' 737,280 images a run draws (0 keeps a data set's
    default; a data set that has no such option refuses it).
    ``memory_budget`` is the GB the data may take on the device (0: half of the free memory); past it the data is
    streamed from disk by ``workers`` loader processes (-1: the CPU cores less one). ``shift``, ``scale`` and
    ``columns`` are a table's column means, standard deviations and names, stored so that evaluation and sampling
    undo the standardization.
    """

    name: str = "digits"
    data_dir: str | None = None  # folder with the files; else $VAELAB_DATA, else the download cache
    path: str | None = None  # a file or folder a source reads (vq-codes: the VQ run); relative: to the run folder
    fingerprint: str | None = None  # identifies the exact source data (vq-codes: the VQ weights' id)
    val_fraction: float = 0.1  # carved from the training set by the run's seed
    test_fraction: float = 0.1  # your own data without a test split: carved by the run's seed
    binarize: str = "auto"  # auto: dynamic for a Bernoulli likelihood on grey-level data, else none
    frames: int = 0  # sequence data sets: frames per sequence (0: the data set's default)
    frame_size: int = 0  # moving digits: height = width of a frame
    digits: int = 0  # moving digits: digits per sequence
    sequences: int = 0  # sequence data sets: training sequences (the test split gets a quarter as many)
    image_size: int = 0  # image folders: resize (shorter side) then center-crop to this square; 0: as stored
    channels: int = 0  # image folders: 1 (grey) or 3 (colour); 0: as stored
    images: int = 0  # dsprites: images drawn from the 737,280 of its grid (0: 100,000; 737280: all of them)
    memory_budget: float = 0.0  # GB the data may take on the device; 0: half of the free memory
    workers: int = -1  # loader processes of the streaming path; -1: the CPU cores less one
    shift: tuple[float, ...] = ()  # tables: the column means subtracted
    scale: tuple[float, ...] = ()  # tables: the column standard deviations divided by
    columns: tuple[str, ...] = ()  # tables: the column names

    def __post_init__(self) -> None:
        accepted = DATASETS.entry(self.name).meta.get("options", ())  # generated data sets declare their options
        for key in SOURCE_OPTIONS:
            if getattr(self, key) < 0:
                raise VaelabError(f"{key} must be >= 0 (0 keeps the data set's default), got {getattr(self, key)}")
            if getattr(self, key) and key not in accepted:
                takers = [e.name for e in DATASETS if key in e.meta.get("options", ())]
                raise VaelabError(f"data set {self.name!r} has no option {key}; it applies to: {', '.join(takers)}")
        if self.channels not in (0, 1, 3):
            raise VaelabError(f"channels must be 1 (grey) or 3 (colour), got {self.channels}")
        if self.binarize not in BINARIZE:
            raise VaelabError(f"unknown binarize {self.binarize!r}; choose from: {', '.join(BINARIZE)}")
        if not 0 <= self.val_fraction < 1:
            raise VaelabError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 < self.test_fraction < 1:
            raise VaelabError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.memory_budget < 0 or self.workers < -1:
            raise VaelabError("memory_budget must be >= 0 (0: half the free memory) and workers >= -1 (-1: auto)")
        if len(self.shift) != len(self.scale):
            raise VaelabError(
                f"shift and scale must have one value per column, got {len(self.shift)} and {len(self.scale)}"
            )


Split = DeviceSplit | StreamSplit


class Dataset:
    """The splits of a data set on a device (``split(name)`` gives a whole split as float32; training and
    evaluation draw decoded batches with ``train_batches`` and ``eval_batches``)."""

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        train: Split | Tensor,
        val: Split | Tensor,
        test: Split | Tensor,
        train_labels: Tensor | None,
        val_labels: Tensor | None,
        test_labels: Tensor | None,
        dynamic: bool,
        kind: str = "images",
        note: str = "",
    ) -> None:
        self.name, self.shape, self.kind, self.dynamic, self.note = name, tuple(shape), kind, dynamic, note
        wrap = lambda s: DeviceSplit.of(s) if isinstance(s, Tensor) else s  # noqa: E731
        self.splits: dict[str, Split] = {"train": wrap(train), "val": wrap(val), "test": wrap(test)}
        self.train_labels, self.val_labels, self.test_labels = train_labels, val_labels, test_labels

    def _get(self, name: str) -> Split:
        if name not in SPLITS:
            raise VaelabError(f"unknown split {name!r}; choose from: {', '.join(SPLITS)}")
        return self.splits[name]

    def split(self, name: str) -> Tensor:
        """A whole split as float32 on the device (decoded; read from disk if streamed)."""
        return self._get(name).all()

    @property
    def train(self) -> Tensor:
        return self.split("train")

    @property
    def val(self) -> Tensor:
        return self.split("val")

    @property
    def test(self) -> Tensor:
        return self.split("test")

    def size(self, name: str) -> int:
        """Examples in a split (nothing is read)."""
        return len(self._get(name))

    def head(self, name: str, n: int) -> Tensor:
        """The first ``n`` examples of a split as float32."""
        return self._get(name).head(n)

    @property
    def streamed(self) -> bool:
        """Whether the training split is read from disk batch by batch."""
        return self.splits["train"].streamed

    @property
    def nbytes(self) -> int:
        """Bytes the splits take on the device."""
        return sum(s.nbytes for s in self.splits.values())

    def extremes(self) -> Tensor:
        """Two examples filled with the training data's smallest and largest value (for ``Model.check_data``)."""
        lo, hi = self.splits["train"].value_range
        device = self.splits["train"].device
        return torch.stack([torch.full(self.shape, lo), torch.full(self.shape, hi)]).to(device)

    def labels(self, name: str) -> Tensor | None:
        self._get(name)
        return getattr(self, f"{name}_labels")

    def steps_per_epoch(self, batch_size: int) -> int:
        steps = self.size("train") // batch_size
        if steps == 0:
            raise VaelabError(
                f"batch size {batch_size} is larger than the training set ({self.size('train')} examples)"
            )
        return steps

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1, skip: int = 0
    ) -> Iterator[Tensor]:
        """One epoch of shuffled batches (the last partial batch is dropped).

        Under data parallelism the global batch is ``batch_size * world`` and rank r takes its r-th
        slice, so N processes see exactly the batches one process with N times the batch would.
        ``skip`` resumes mid-epoch: the same permutation, minus the batches already done. Held or streamed, the
        same examples come in the same order."""
        split = self.splits["train"]
        global_batch = batch_size * world
        steps = self.steps_per_epoch(global_batch)
        perm = torch.randperm(self.size("train"), generator=generator)
        if not split.streamed:
            perm = perm.to(split.device, non_blocking=True)
        starts = (i * global_batch + rank * batch_size for i in range(skip, steps))
        for x in split.batches([perm[s : s + batch_size] for s in starts]):
            yield binarize(x) if self.dynamic else x

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Tensor]:
        yield from self._get(split).ranges(batch_size)


def binarize(p: Tensor) -> Tensor:
    """One Bernoulli draw per pixel of probabilities ``p`` (dynamic binarization): [u < p] for u ~ U[0, 1), which is
    Bernoulli(p) exactly, and on a CPU 2.8 times faster than ``torch.bernoulli`` (0.31 against 0.87 ms for a batch of
    100 MNIST images, one thread, paired rounds): about a tenth of a training step of the MLP VAE 784-512-16."""
    return (torch.rand_like(p) < p).to(p.dtype)


def _binarize(x: Any, seed: int) -> np.ndarray:
    """Bernoulli draws of ``x``'s values, block by block (the same draws as one call on the whole array)."""
    rng = np.random.default_rng(seed)
    out = np.empty(x.shape, dtype=np.bool_)
    for start, block in chunks(x):
        if block.dtype == np.uint8:
            block = block.astype(np.float32) / 255
        out[start : start + len(block)] = rng.random(block.shape, dtype=np.float32) < block
    return out


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: the GPU's free memory, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f}
        return int(info["MemAvailable"]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def load_dataset(
    config: DataConfig,
    seed: int,
    device: torch.device | str = "cpu",
    binary_model: bool = False,
    root: str | os.PathLike | None = None,
    world: int = 1,
    log: Path | None = None,
    progress: bool = True,
) -> Dataset:
    """Read the data set, carve the validation split, binarize as configured, hold it on ``device`` or stream it.

    ``root`` is the folder a relative ``config.path`` is relative to (the run folder); ``world`` the processes
    sharing the machine's loader workers; the progress of slow reads is shown (``progress``) and appended to ``log``
    (RUN/train.log)."""
    device = torch.device(device)
    options: dict[str, Any] = {key: getattr(config, key) for key in SOURCE_OPTIONS if getattr(config, key)}
    entry = DATASETS.entry(config.name)
    if entry.meta.get("takes_path"):
        path = None if config.path is None else Path(config.path).expanduser()
        if path is not None and not path.is_absolute() and root is not None:
            path = Path(root) / path
        options.update(path=path, fingerprint=config.fingerprint)
    if entry.meta.get("takes_seed"):  # your own data: its test split is carved by the run's seed
        options.update(seed=seed, test_fraction=config.test_fraction)
    if entry.meta.get("takes_stats"):
        options.update(shift=config.shift, scale=config.scale, columns=config.columns)
    arrays: ImageArrays = entry.obj(resolve_data_dir(config.data_dir), **options)
    train, test = arrays.train, arrays.test
    train_labels, val_labels = arrays.train_labels, arrays.val_labels
    if arrays.val is not None:  # the source's own validation split (val_fraction does not apply)
        val = arrays.val
    else:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = round(config.val_fraction * len(train))
        val_idx, train_idx = order[:n_val], order[n_val:]
        val, train = take(train, val_idx), take(train, train_idx)
        if train_labels is not None:
            train_labels, val_labels = train_labels[train_idx], train_labels[val_idx]
    raw = {"train": train, "val": val, "test": test}
    found = {name: scan(a) for name, a in raw.items()}
    for name, s in found.items():
        if not s.finite:
            raise VaelabError(
                f"{config.path or config.name}: the {name} split holds NaN or infinite values (first in its row "
                f"{s.first_bad}); remove or replace them before training"
            )
    lo, hi = found["train"].lo, found["train"].hi
    mode = config.binarize
    if mode == "auto":  # grey levels in [0, 1] only: other data (e.g. signals) is left for the likelihood to refuse
        mode = "dynamic" if binary_model and not arrays.binary and lo >= 0 and hi <= 1 else "none"
    if mode != "none":
        if lo < 0 or hi > 1:
            raise VaelabError(f"binarization needs data in [0, 1]; {config.name} is in [{lo:g}, {hi:g}]")
        raw["val"], raw["test"] = _binarize(val, EVAL_BINARIZATION_SEED), _binarize(test, EVAL_BINARIZATION_SEED + 1)
        if mode == "fixed":
            raw["train"] = _binarize(train, EVAL_BINARIZATION_SEED + 2)
        for name in ("val", "test", "train")[: 3 if mode == "fixed" else 2]:
            found[name] = Scan(0.0, 1.0, True, "bits")
    shape = tuple(train.shape[1:])
    need = sum(row_bytes(shape, found[n].encoding) * len(raw[n]) for n in SPLITS)
    budget = config.memory_budget * 1e9 or BUDGET_SHARE * free_memory(device)
    stream = need > budget
    workers = config.workers if config.workers >= 0 else default_workers(world)
    splits: dict[str, Split] = {}
    for name in SPLITS:
        s = found[name]
        binarized = mode != "none" and (name != "train" or mode == "fixed")
        if stream and not binarized:  # binarized splits are held as bits: an eighth of a byte per value
            splits[name] = StreamSplit(raw[name], s.encoding, s.lo, s.hi, device, workers)
        else:
            splits[name] = DeviceSplit.build(raw[name], s, device, f"{config.name}, {name} split", log, progress)
    held = sum(sp.nbytes for sp in splits.values())
    how = found["train"].encoding
    note = (
        f"data: {config.name} needs {_gb(need)} as {how}, over the memory budget of {_gb(budget)}: streamed from "
        f"disk by {workers} loader processes ({_gb(held)} held on {device.type})"
        if stream
        else f"data: {config.name} held on {device.type} as {how}, {_gb(held)} (memory budget {_gb(budget)})"
    )

    def tensor(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Dataset(
        name=config.name,
        kind=entry.meta.get("kind", "images"),
        shape=shape,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        train_labels=tensor(train_labels),
        val_labels=tensor(val_labels),
        test_labels=tensor(arrays.test_labels),
        dynamic=mode == "dynamic",
        note=note,
    )
