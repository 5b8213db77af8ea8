"""Your own images: a folder of image files (PNG, JPEG, BMP, ... anything Pillow reads), ``--data FOLDER``.

FOLDER/*.png                     unlabelled images; the test split is carved by the run's seed (``test_fraction``)
FOLDER/CLASS/*.png               labels from the class folders, in sorted order (as torchvision's ImageFolder)
FOLDER/train/..., FOLDER/test/...  the splits as given (each flat or with class folders)

``data.image_size=N`` resizes the shorter side to N and center-crops an N x N square (else every image must have
the same size), ``data.channels`` is 1 (grey) or 3 (colour) (else grey if every image is, colour otherwise).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data.base import DATASETS, ImageArrays
from vaelab.data.download import cache_dir
from vaelab.data.sources.images import GREY_MODES, Geometry, ImageFiles, header, image_extensions
from vaelab.data.sources.registry import PATH_SOURCES, PathSource, check_fingerprint

NAME = "image-folder"
TEST_STREAM = 1  # the test split is drawn from the run's seed on a stream of its own


def _images(folder: Path, exts: set[str]) -> list[Path]:
    """The image files under ``folder`` (any depth), sorted."""
    found = []
    for top, _, names in os.walk(folder):
        found += [os.path.join(top, n) for n in names if os.path.splitext(n)[1].lower() in exts]
    return [Path(f) for f in sorted(found)]


def index(files: list[Path], root: Path) -> tuple[str, list[tuple[tuple[int, int], str]]]:
    """The fingerprint of the files' contents and every image's (size, mode), in one read of each file.

    Kept in the cache under the id of the files' names, sizes and modification times, so a folder that did not
    change is not read again (``vaelab eval`` on a run of 60,000 PNGs)."""
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    cached = cache_dir() / "folders" / f"{h.hexdigest()}.json"
    try:
        saved = json.loads(cached.read_text())
        return saved["fingerprint"], [((w, ht), m) for w, ht, m in saved["heads"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    content, heads = hashlib.blake2b(digest_size=16), []
    with Progress(len(files), f"reading {root}", unit="images") as bar:
        for f in files:
            data = f.read_bytes()
            content.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.blake2b(data, digest_size=16).digest())
            heads.append(header(f, io.BytesIO(data)))
            bar.advance()
    result = content.hexdigest()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"fingerprint": result, "heads": [[*size, m] for size, m in heads]}))
        tmp.replace(cached)
    except OSError:
        pass  # a read-only cache: the folder is read again next time
    return result, heads


def _labelled(
    folder: Path, exts: set[str], classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """The images of a folder, flat or in class folders, their labels and the class names (None when flat)."""
    top = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    found = {p.name: _images(p, exts) for p in sorted(folder.iterdir()) if p.is_dir()}
    found = {name: files for name, files in found.items() if files}
    if top and found:
        raise VaelabError(
            f"{folder} holds images both at its top level ({top[0].name}, ...) and in subfolders "
            f"({next(iter(found))}/, ...); put every image in a class folder, or all of them at the top level"
        )
    if not found:
        return top, None, None
    classes = classes or sorted(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise VaelabError(f"{folder} has class folders the training images lack: {', '.join(unknown)}")
    files, labels = [], []
    for k, name in enumerate(classes):
        files += found.get(name, [])
        labels += [k] * len(found.get(name, []))
    return files, np.array(labels, dtype=np.int64), classes


def _splits(folder: Path) -> dict[str, tuple[list[Path], np.ndarray | None]]:
    exts = image_extensions()
    if not folder.is_dir():
        raise VaelabError(f"{folder} is not a folder")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        *train, classes = _labelled(folder / "train", exts)
        splits = {"train": tuple(train), "test": _labelled(folder / "test", exts, classes)[:2]}
    else:
        splits = {"all": _labelled(folder, exts)[:2]}
    for name, (files, _) in splits.items():
        if not files:
            where = folder if name == "all" else folder / name
            raise VaelabError(f"{where} holds no images Pillow can read ({', '.join(sorted(exts)[:6])}, ...)")
    return splits


def _files(folder: Path) -> list[Path]:
    return [f for files, _ in _splits(folder).values() for f in files]


def describe(path: Path, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """The data section of a run on an image folder; the folder is checked now (an empty one is refused)."""
    return {"name": NAME, "path": str(path), "fingerprint": index(_files(path), path)[0]}


def _geometry(
    files: list[Path], heads: list[tuple[tuple[int, int], str]], image_size: int, channels: int
) -> tuple[Geometry, tuple[int, int, int]]:
    """From the headers: the channels (grey only if every image is) and the common size."""
    channels = channels or (1 if all(mode in GREY_MODES for _, mode in heads) else 3)
    if not image_size:
        sizes = {}
        for f, (size, _) in zip(files, heads):
            sizes.setdefault(size, f)
        if len(sizes) > 1:
            (s1, f1), (s2, f2) = list(sizes.items())[:2]
            raise VaelabError(
                f"the images have different sizes ({f1.name} is {s1[0]}x{s1[1]}, {f2.name} is {s2[0]}x{s2[1]}, "
                f"{len(sizes)} sizes in all); give them one with --set image_size=N (resize, then center-crop)"
            )
        ((w, h),) = sizes
        return Geometry(0, 0, channels), (channels, h, w)
    return Geometry(image_size, 0, channels), (channels, image_size, image_size)


@DATASETS.register(
    NAME,
    "your own images: --data FOLDER of PNG/JPEG/BMP/... (class subfolders give labels, train/ and test/ the "
    "splits; --set image_size=N, channels=1|3)",
    kind="images",
    takes_path=True,
    takes_seed=True,
    options=("image_size", "channels"),
)
def load_folder(
    data_dir: Path | None,
    path: Path | None = None,
    fingerprint: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
    image_size: int = 0,
    channels: int = 0,
) -> ImageArrays:
    """The images of ``path`` as lazy uint8 arrays (decoded when read), split as the folder says."""
    if path is None:
        raise VaelabError(f"{NAME} needs the folder: --data FOLDER")
    folder = Path(path)
    splits = _splits(folder)
    all_files = [f for files, _ in splits.values() for f in files]
    now, heads = index(all_files, folder)
    check_fingerprint(folder, fingerprint, lambda: now)
    geometry, shape = _geometry(all_files, heads, image_size, channels)

    def lazy(files: list[Path]) -> ImageFiles:
        return ImageFiles([str(f) for f in files], geometry, shape)

    if "all" in splits:
        files, labels = splits["all"]
        if len(files) < 2:
            raise VaelabError(f"{folder} holds one image; a data set needs at least two (train and test)")
        order = np.random.default_rng((seed, TEST_STREAM)).permutation(len(files))
        n_test = min(len(files) - 1, max(1, round(test_fraction * len(files))))
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        pick = lambda idx: None if labels is None else labels[idx]  # noqa: E731
        return ImageArrays(
            lazy([files[i] for i in train_idx]), lazy([files[i] for i in test_idx]), pick(train_idx), pick(test_idx)
        )
    (train, train_labels), (test, test_labels) = splits["train"], splits["test"]
    return ImageArrays(lazy(train), lazy(test), train_labels, test_labels)


PATH_SOURCES.register("folder", "a folder of images")(PathSource(Path.is_dir, describe, "a folder of images"))
