"""CelebA at 64x64, the beta-VAE / VQ-VAE standard: the aligned faces center-cropped to 148x148, resized to 64x64.

Read from the user's copy (CelebA's download is rate-limited and breaks): ``img_align_celeba/`` (a folder of
``000001.jpg`` ...) or ``img_align_celeba.zip``, with ``list_eval_partition.txt`` (the official split: 0 train,
1 validation, 2 test), in the data folder or its ``celeba/`` subfolder. Images are decoded when read, so the data
set may be held on the device as uint8 (2.5 GB) or streamed from the files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays
from vaelab.data.sources.images import Geometry, ImageFiles

NAME = "celeba64"
FOLDER, ARCHIVE, PARTITION = "img_align_celeba", "img_align_celeba.zip", "list_eval_partition.txt"
GEOMETRY = Geometry(size=64, crop=148, channels=3)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def read_partition(path: Path) -> dict[str, list[str]]:
    """The official split: file names per split, in the file's order."""
    splits: dict[str, list[str]] = {s: [] for s in SPLIT_CODES}
    codes = {v: k for k, v in SPLIT_CODES.items()}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise VaelabError(f"{path}, line {n}: expected 'FILE.jpg 0|1|2', got {line.strip()!r}")
        splits[codes[int(parts[1])]].append(parts[0])
    return splits


def _find(data_dir: Path | None) -> tuple[Path, Path | None, Path]:
    """(folder or zip, None or the zip's inner folder, partition file) from the data folder or its celeba/."""
    if data_dir is None:
        raise VaelabError(
            f"{NAME} is read from your copy of CelebA (its download is unreliable): put {FOLDER}/ or {ARCHIVE} and "
            f"{PARTITION} in a folder and pass --data-dir FOLDER (or set {DATA_ENV})"
        )
    for base in (Path(data_dir) / "celeba", Path(data_dir)):
        partition = base / PARTITION
        if not partition.is_file():
            continue
        if (base / FOLDER).is_dir():
            return base / FOLDER, None, partition
        if (base / ARCHIVE).is_file():
            return base / ARCHIVE, Path(FOLDER), partition
    raise VaelabError(
        f"{NAME} not found in {data_dir} or {Path(data_dir) / 'celeba'}: each needs {PARTITION} and either "
        f"{FOLDER}/ or {ARCHIVE}"
    )


@DATASETS.register(
    NAME,
    "CelebA aligned faces, center crop 148, resized to 64x64 colour; your img_align_celeba/ (or its zip) and "
    "list_eval_partition.txt (official split: 162,770 train / 19,867 val / 19,962 test)",
    kind="images",
    shape=(3, 64, 64),
)
def load_celeba64(data_dir: Path | None) -> ImageArrays:
    """The three official splits as lazy uint8 arrays (decoded when read); no labels."""
    source, inner, partition = _find(data_dir)
    splits = read_partition(partition)
    archive = None
    if inner is not None:
        try:
            with zipfile.ZipFile(source) as z:
                members = set(z.namelist())
        except (OSError, zipfile.BadZipFile) as e:
            raise VaelabError(f"{source}: cannot read it as a zip archive ({e})") from None
        prefix = f"{inner.as_posix()}/" if any(m.startswith(f"{inner.as_posix()}/") for m in members) else ""
        files = {s: [prefix + f for f in names] for s, names in splits.items()}
        missing = [f for names in files.values() for f in names if f not in members]
        archive = str(source)
    else:
        files = {s: [str(source / f) for f in names] for s, names in splits.items()}
        missing = [f for names in files.values() for f in names if not Path(f).is_file()]
    if missing:
        raise VaelabError(
            f"{len(missing)} images of {partition} are not in {source} (the first: {Path(missing[0]).name}); "
            "the folder or zip is incomplete"
        )
    for s in ("train", "test"):
        if not files[s]:
            raise VaelabError(f"{partition} lists no {s} images (split code {SPLIT_CODES[s]})")
    arrays = {s: ImageFiles(f, GEOMETRY, (3, 64, 64), archive) for s, f in files.items()}
    return ImageArrays(arrays["train"], arrays["test"], val=arrays["val"])
