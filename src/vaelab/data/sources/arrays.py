"""Your own arrays: ``--data FILE.npy`` or ``FILE.npz``.

shape             read as
(N, H, W)         grey images
(N, C, H, W)      images, C = 1 or 3
(N, H, W, C)      images, C = 1 or 3 (channels last, moved first as rows are read)
(N, D)            vectors

Images are uint8 (grey levels 0..255), bool, or floats in [0, 1]; vectors any numbers. An .npy file is memory-mapped
(read as needed, so it may be larger than memory); its labels may sit beside it as FILE.labels.npy. An .npz holds
the images under ``x`` (or ``images``, ``data``, or its only array) and optionally ``labels``, or the splits
``train`` and ``test`` (with ``train_labels``, ``test_labels``); without a test split one is carved by the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATASETS, ImageArrays, LazyArray, take
from vaelab.data.sources.registry import PATH_SOURCES, PathSource, check_fingerprint, fingerprint

SUFFIXES = (".npy", ".npz")
IMAGES, VECTORS = "image-array", "vector-array"
TEST_STREAM = 1
SHAPES = "(N, H, W), (N, C, H, W) or (N, H, W, C) images with C = 1 or 3, or (N, D) vectors"
IMAGE_KEYS = ("x", "images", "data")


class ChannelsLast(LazyArray):
    """(N, H, W, C) rows read as (N, C, H, W)."""

    def __init__(self, base: Any) -> None:
        self.base, self.dtype = base, np.dtype(base.dtype)
        n, h, w, c = base.shape
        self.shape = (n, c, h, w)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.base[indices]).transpose(0, 3, 1, 2))


class Reshaped(LazyArray):
    """Rows of an array with the per-row shape changed (a grey (N, H, W) array as (N, 1, H, W))."""

    def __init__(self, base: Any, shape: tuple[int, ...]) -> None:
        self.base, self.dtype, self.shape = base, np.dtype(base.dtype), (len(base), *shape)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.base[indices]).reshape(len(indices), *self.shape[1:])


def _kind(a: Any, where: str) -> str:
    """images or vectors, from the shape; anything else is refused with the shapes that are read."""
    shape = tuple(a.shape)
    if len(shape) == 2 and shape[0] > 0:
        return "vectors"
    if len(shape) == 3 and shape[0] > 0:
        return "images"
    if len(shape) == 4 and shape[0] > 0 and (shape[1] in (1, 3) or shape[3] in (1, 3)):
        return "images"
    raise VaelabError(f"{where} holds an array of shape {shape}, which vaelab cannot read as data; give {SHAPES}")


def _as_images(a: Any) -> Any:
    if a.ndim == 3:
        return Reshaped(a, (1, *a.shape[1:])) if isinstance(a, (np.memmap, LazyArray)) else a[:, None]
    if a.shape[1] in (1, 3):
        return a
    return ChannelsLast(a) if isinstance(a, (np.memmap, LazyArray)) else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _dtype_check(a: Any, kind: str, where: str) -> None:
    dtype = np.dtype(a.dtype)
    if dtype.kind not in "biuf":
        raise VaelabError(f"{where} holds {dtype} values; vaelab reads numbers (uint8 or bool images, float values)")
    if kind == "images" and dtype.kind in "iu" and dtype != np.uint8:
        raise VaelabError(
            f"{where} holds {dtype} images; store them as uint8 (grey levels 0..255) or as floats in [0, 1]"
        )


def _read(path: Path) -> dict[str, Any]:
    """The arrays of an .npy (memory-mapped, with FILE.labels.npy beside it) or an .npz."""
    try:
        if path.suffix == ".npy":
            arrays = {"x": np.load(path, mmap_mode="r", allow_pickle=False)}
            labels = path.with_suffix(".labels.npy")
            if labels.is_file():
                arrays["labels"] = np.load(labels, allow_pickle=False)
            return arrays
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise VaelabError(f"{path}: cannot read it as a NumPy {path.suffix} file ({e})") from None


def _images_of(arrays: dict[str, Any], path: Path) -> dict[str, Any]:
    """{train, test?, train_labels?, test_labels?} from the file's keys."""
    if "train" in arrays:
        out = {"train": arrays["train"], "train_labels": arrays.get("train_labels")}
        if "test" in arrays:
            out.update(test=arrays["test"], test_labels=arrays.get("test_labels"))
        return out
    data = [k for k in IMAGE_KEYS if k in arrays] or [k for k in arrays if "label" not in k]
    if len(data) != 1 and not any(k in arrays for k in IMAGE_KEYS):
        raise VaelabError(
            f"{path} holds the arrays {', '.join(sorted(arrays)) or '(none)'}; name the data x (and its labels "
            "labels), or the splits train and test"
        )
    return {"train": arrays[data[0]], "train_labels": arrays.get("labels")}


def _labels(labels: Any, n: int, where: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape[:1] != (n,) or labels.dtype.kind not in "biu":
        raise VaelabError(
            f"{where}: the labels must be integers, one per example ({n}), got {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64)


def _checked(path: Path) -> tuple[dict[str, Any], str]:
    parts = _images_of(_read(path), path)
    kinds = {_kind(parts[s], f"{path} ({s})") for s in ("train", "test") if parts.get(s) is not None}
    if len(kinds) > 1:
        raise VaelabError(f"{path}: the train and test arrays differ in kind ({', '.join(sorted(kinds))})")
    kind = kinds.pop()
    for s in ("train", "test"):
        if parts.get(s) is not None:
            _dtype_check(parts[s], kind, f"{path} ({s})")
            parts[f"{s}_labels"] = _labels(parts.get(f"{s}_labels"), len(parts[s]), f"{path} ({s})")
    return parts, kind


def describe(path: Path, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """The data section of a run on an array file: ``image-array`` or ``vector-array`` by its shape."""
    _, kind = _checked(path)
    return {"name": IMAGES if kind == "images" else VECTORS, "path": str(path), "fingerprint": _fingerprint(path)}


def _fingerprint(path: Path) -> str:
    labels = path.with_suffix(".labels.npy")
    return fingerprint([path, labels] if path.suffix == ".npy" and labels.is_file() else [path], path.parent)


def load_array(
    data_dir: Path | None,
    path: Path | None = None,
    fingerprint: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
) -> ImageArrays:
    """The arrays of ``path`` (memory-mapped for .npy); the test split carved by the seed when the file has none."""
    if path is None:
        raise VaelabError("an array data set needs its file: --data FILE.npy or FILE.npz")
    path = Path(path)
    check_fingerprint(path, fingerprint, lambda: _fingerprint(path))
    parts, kind = _checked(path)
    shape = (lambda a: _as_images(a)) if kind == "images" else (lambda a: a)
    train, train_labels = shape(parts["train"]), parts["train_labels"]
    if parts.get("test") is not None:
        return ImageArrays(train, shape(parts["test"]), train_labels, parts["test_labels"])
    if len(train) < 2:
        raise VaelabError(f"{path} holds one example; a data set needs at least two (train and test)")
    order = np.random.default_rng((seed, TEST_STREAM)).permutation(len(train))
    n_test = min(len(train) - 1, max(1, round(test_fraction * len(train))))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    pick = lambda idx: None if train_labels is None else train_labels[idx]  # noqa: E731
    return ImageArrays(take(train, train_idx), take(train, test_idx), pick(train_idx), pick(test_idx))


_META = dict(takes_path=True, takes_seed=True)
DATASETS.register(IMAGES, "your own images: --data FILE.npy/.npz, " + SHAPES.split(", or")[0], kind="images", **_META)(
    load_array
)
DATASETS.register(VECTORS, "your own vectors: --data FILE.npy/.npz of shape (N, D)", kind="vectors", **_META)(
    load_array
)
PATH_SOURCES.register("array", "NumPy arrays")(
    PathSource(lambda p: p.is_file() and p.suffix.lower() in SUFFIXES, describe, "an .npy or .npz array")
)
