"""Statically binarized MNIST (Larochelle & Murray 2011): 50k train / 10k valid / 10k test, pixels fixed in {0, 1}.

Read from a folder (``--data-dir`` or $VAELAB_DATA, itself or its ``binarized-mnist/``) holding
``binarized_mnist.npz`` (keys train, valid, test) or the three MAT files ``binarized_mnist_{split}.mat``; without
a folder the MAT files are downloaded into the cache. No official checksum of the original .amat text files
exists and a re-saved .npz changes its md5, so each split is checked by content: its shape and the md5 of its
uint8 pixels. The valid split is the validation set (val_fraction does not apply).

There are no label files, but the test rows are MNIST's test images in stable order by label (checked pixel by
pixel against the IDX files, see shared/data/binarized-mnist/PROVENANCE.md), which gives the test labels.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays
from vaelab.data.download import cache_dir, fetch

NAME = "binarized-mnist"
NPZ = "binarized_mnist.npz"
SPLITS = ("train", "valid", "test")
ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
#: md5 of each split's pixels as C-ordered uint8 (N, 784): the same for the .npz and the MAT files
CONTENT_MD5 = {
    "train": "8d4f0427d6c2572b5e9994e08bad66de",
    "valid": "3e33becd40c694040e5e6c812e2f4b50",
    "test": "fc34623e13bd64fed2f8b61365198339",
}
#: the MAT files (variable X) as served by github.com/mingzhang-yin/ARM-gradient, named .amat there
MAT_MD5 = {
    "train": "4e26f7a5b466cfcde0fa4876fa4b60a6",
    "valid": "3c8c0bae400a11eda4c6caf6642d7d34",
    "test": "3478bd31ef84368bf30234a011d886fa",
}
MIRRORS = ("https://raw.githubusercontent.com/mingzhang-yin/ARM-gradient/9b5f74da4e4009c5556e8d7a87c88c8e291c253d/",)
#: MNIST's test set has this many images of each digit 0..9
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def mat_file(split: str) -> str:
    return f"binarized_mnist_{split}.mat"


@DATASETS.register(
    NAME,
    "statically binarized MNIST (Larochelle & Murray), 50k train / 10k valid / 10k test",
    kind="images",
    shape=(1, 28, 28),
)
def load_binarized_mnist(data_dir: Path | None) -> ImageArrays:
    folder = _find_folder(Path(data_dir)) if data_dir is not None else _download_missing()
    splits = _read(folder)
    for split in SPLITS:
        _check(split, splits[split], folder)
    images = {s: a.reshape(-1, 1, 28, 28).astype(np.float32) for s, a in splits.items()}
    test_labels = np.repeat(np.arange(10), TEST_LABEL_COUNTS)
    return ImageArrays(images["train"], images["test"], None, test_labels, binary=True, val=images["valid"])


def _has_files(folder: Path) -> bool:
    return (folder / NPZ).is_file() or all((folder / mat_file(s)).is_file() for s in SPLITS)


def _find_folder(data_dir: Path) -> Path:
    for folder in (data_dir / NAME, data_dir):
        if _has_files(folder):
            return folder
    raise VaelabError(
        f"{NAME} not found in {data_dir / NAME} or {data_dir}: put {NPZ} (keys train, valid, test) or "
        f"{', '.join(mat_file(s) for s in SPLITS)} there, or point --data-dir or {DATA_ENV} at a folder that "
        "holds them (with neither, vaelab downloads them)"
    )


def _download_missing() -> Path:
    folder = cache_dir() / NAME
    if not _has_files(folder):
        for split in SPLITS:
            urls = [f"{mirror}binarized_mnist_{split}.amat" for mirror in MIRRORS]
            fetch(urls, folder / mat_file(split), MAT_MD5[split])
    return folder


def _read(folder: Path) -> dict[str, np.ndarray]:
    path = folder / NPZ
    if not path.is_file():
        return {s: _read_mat(folder / mat_file(s)) for s in SPLITS}
    try:
        with np.load(path) as npz:
            missing = [s for s in SPLITS if s not in npz.files]
            if missing:
                raise VaelabError(f"{path} lacks the key(s) {', '.join(missing)}; it needs train, valid and test")
            return {s: np.ascontiguousarray(npz[s]) for s in SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _corrupt(path, e) from None


def _read_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat  # scipy comes with scikit-learn; imported here because it is slow to import
    from scipy.io.matlab import MatReadError

    try:
        return np.ascontiguousarray(loadmat(str(path))["X"])
    except (OSError, ValueError, EOFError, KeyError, MatReadError) as e:
        raise _corrupt(path, e) from None


def _corrupt(path: Path, e: Exception) -> VaelabError:
    return VaelabError(f"cannot read {path}: it is truncated or corrupt ({type(e).__name__}: {e})")


def _check(split: str, pixels: np.ndarray, folder: Path) -> None:
    if pixels.shape != (ROWS[split], 784):
        raise VaelabError(
            f"{NAME} in {folder}: the {split} split has shape {pixels.shape}, expected ({ROWS[split]}, 784)"
        )
    got = hashlib.md5(pixels.astype(np.uint8).tobytes()).hexdigest()
    if got != CONTENT_MD5[split]:
        raise VaelabError(
            f"{NAME} in {folder}: the {split} split's pixels have md5 {got}, expected {CONTENT_MD5[split]}; "
            "the files are corrupt or not Larochelle's binarization"
        )
