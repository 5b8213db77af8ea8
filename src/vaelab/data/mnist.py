"""MNIST and Fashion-MNIST: four md5-checked IDX files each, from a given folder or downloaded to the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays
from vaelab.data.download import cache_dir, fetch, md5
from vaelab.data.idx import read_idx

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxSource:
    """One MNIST-style data set: its files' official md5s and the mirrors that serve them."""

    description: str
    md5s: dict[str, str]  # file name -> md5, one entry per name in FILES
    mirrors: tuple[str, ...]  # URL prefixes; the file name is appended


#: name -> source. Tests swap entries (dataclasses.replace) to point at fake files and file:// mirrors.
SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        "MNIST handwritten digits, 28x28 grey, 60k train / 10k test",
        dict(
            zip(
                FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            )
        ),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashion-mnist": IdxSource(
        "Fashion-MNIST clothing images, 28x28 grey, 60k train / 10k test",
        dict(
            zip(
                FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            )
        ),
        ("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}

#: (resolved path, size, mtime_ns) -> md5, so repeated loads in one process skip re-hashing.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def load_idx_dataset(name: str, data_dir: Path | None) -> ImageArrays:
    """Load a data set of SOURCES from data_dir (never downloading there), else from the download cache."""
    source = SOURCES[name]
    folder = _find_folder(name, Path(data_dir)) if data_dir is not None else _download_missing(name, source)
    for file in FILES:
        _verify(folder / file, source.md5s[file], name)
    train, train_labels = _pair(folder / TRAIN_IMAGES, folder / TRAIN_LABELS)
    test, test_labels = _pair(folder / TEST_IMAGES, folder / TEST_LABELS)
    return ImageArrays(train, test, train_labels, test_labels)


@DATASETS.register("mnist", SOURCES["mnist"].description, kind="images", shape=(1, 28, 28))
def load_mnist(data_dir: Path | None) -> ImageArrays:
    return load_idx_dataset("mnist", data_dir)


@DATASETS.register("fashion-mnist", SOURCES["fashion-mnist"].description, kind="images", shape=(1, 28, 28))
def load_fashion_mnist(data_dir: Path | None) -> ImageArrays:
    return load_idx_dataset("fashion-mnist", data_dir)


def _find_folder(name: str, data_dir: Path) -> Path:
    """data_dir/<name>/ if it holds all four files, else data_dir/ itself; otherwise say what is missing."""
    candidates = [data_dir / name, data_dir]
    for folder in candidates:
        if all((folder / f).is_file() for f in FILES):
            return folder
    missing = []
    for folder in candidates:
        absent = [f for f in FILES if not (folder / f).is_file()]
        state = "folder does not exist" if not folder.is_dir() else "missing " + ", ".join(absent)
        missing.append(f"{folder} ({state})")
    raise VaelabError(
        f"{name} not found: looked in {'; '.join(missing)}. Put the files {', '.join(FILES)} in "
        f"{data_dir / name} or {data_dir}, or point --data-dir or {DATA_ENV} at a folder that holds them (with "
        "neither, vaelab downloads them into its cache)"
    )


def _download_missing(name: str, source: IdxSource) -> Path:
    folder = cache_dir() / name
    for file in FILES:
        if not (folder / file).is_file():
            fetch([mirror + file for mirror in source.mirrors], folder / file, source.md5s[file])
    return folder


def _verify(path: Path, expected: str, name: str) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = md5(path)
    got = _MD5_CACHE[key]
    if got == expected:
        return
    other = [n for n, s in SOURCES.items() if n != name and got in s.md5s.values()]
    problem = (
        f"it is the {other[0]} file, not {name}; point --data-dir or {DATA_ENV} at the {name} files"
        if other
        else f"the file is corrupt or not the official {name} release; delete or replace it"
    )
    raise VaelabError(f"{path} has the wrong md5: expected {expected}, got {got}; {problem}")


def _pair(images_path: os.PathLike, labels_path: os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise VaelabError(
            f"{images_path} (shape {images.shape}) and {labels_path} (shape {labels.shape}) do "
            "not form an image set with one label per image; replace them with the official files"
        )
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)
