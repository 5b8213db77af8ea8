"""CIFAR-10 (Krizhevsky 2009): the python version's pickled batches, from a folder or downloaded to the cache.

A folder may hold ``cifar-10-batches-py/`` (the unpacked archive), be that folder itself, or hold it under
``cifar10/``. Each batch is a dict with ``data`` (10000, 3072) uint8, rows of R, G, B planes of 32x32, and
``labels``. The pickles are read with an unpickler that admits only the numpy array types the batches are made
of, so a file from elsewhere cannot run code; each batch file is checked against its official md5.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays
from vaelab.data.download import cache_dir, fetch, md5

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FILES = (*TRAIN_FILES, TEST_FILE)
ARCHIVE = "cifar-10-python.tar.gz"
URL = f"https://www.cs.toronto.edu/~kriz/{ARCHIVE}"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
#: file -> official md5 (torchvision's table); tests swap it to point at stand-in files
MD5S: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


@DATASETS.register(
    "cifar10",
    "CIFAR-10 colour images, 32x32x3, 50k train / 10k test (python batches)",
    kind="images",
    shape=(3, 32, 32),
)
def load_cifar10(data_dir: Path | None) -> ImageArrays:
    folder = find_folder(Path(data_dir)) if data_dir is not None else _download()
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    test_images, test_labels = read_batch(folder / TEST_FILE)
    return ImageArrays(
        np.concatenate([x for x, _ in train]), test_images, np.concatenate([y for _, y in train]), test_labels
    )


def find_folder(data_dir: Path) -> Path:
    """The unpacked batches in data_dir, or the archive there unpacked into the cache (data_dir is never written)."""
    candidates = [data_dir / "cifar10" / FOLDER, data_dir / FOLDER, data_dir]
    for folder in candidates:
        if all((folder / f).is_file() for f in FILES):
            return folder
    for archive in (data_dir / "cifar10" / ARCHIVE, data_dir / ARCHIVE):
        if archive.is_file():
            if md5(archive) != ARCHIVE_MD5:
                raise VaelabError(f"{archive} has the wrong md5 (expected {ARCHIVE_MD5}); it is corrupt, replace it")
            return _extract(archive, cache_dir() / "cifar10" / FOLDER)
    raise VaelabError(
        f"cifar10 not found: none of {', '.join(str(c) for c in candidates)} holds {', '.join(FILES)}, and "
        f"{data_dir} holds no {ARCHIVE}. Put {ARCHIVE} ({URL}) or its unpacked {FOLDER}/ into {data_dir}, or point "
        f"--data-dir or {DATA_ENV} at a folder that holds it (with neither, vaelab downloads it)"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (N, 3, 32, 32) float32 in [0, 1] and labels (N,) int64."""
    got = md5(path)
    if got != MD5S[path.name]:
        raise VaelabError(
            f"{path} has the wrong md5: expected {MD5S[path.name]}, got {got}; the file is corrupt or not the "
            "official CIFAR-10 python release; delete or replace it"
        )
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(d[b"data"])
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise VaelabError(f"{path} is not a CIFAR-10 python batch ({e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise VaelabError(
            f"{path} is not a CIFAR-10 batch: expected uint8 data (N, 3072) and N labels, got {data.dtype} "
            f"{data.shape} and {len(labels)} labels"
        )
    return (data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0), labels


def _download() -> Path:
    root = cache_dir() / "cifar10"
    folder = root / FOLDER
    if all((folder / f).is_file() for f in FILES):
        return folder
    archive = fetch([URL], root / ARCHIVE, ARCHIVE_MD5)
    _extract(archive, folder)
    archive.unlink()
    return folder


def _extract(archive: Path, folder: Path) -> Path:
    """The six batch files of the archive into folder (nothing else is extracted: no paths from the archive)."""
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.isfile() and Path(m.name).name in FILES:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    return folder
