"""How ``--data`` / ``data=`` finds its source: a registered name, a path (chosen by what the path is), or a Python
object (chosen by its type), and the fingerprint that ties a run to the exact contents it was trained on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry, TypeRegistry
from vaelab.data.base import DATASETS

#: what (seed, data options) -> the data section's values; a path source also says which paths it takes
Describe = Callable[[Path, int, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class PathSource:
    """A kind of path ``--data`` accepts: ``matches(path)`` says whether it is one, ``describe`` gives the data
    section of the run config (the ``DATASETS`` name, the absolute path, the fingerprint, any statistics)."""

    matches: Callable[[Path], bool]
    describe: Describe
    accepts: str  # for messages: what paths these are


#: name -> PathSource, tried in name order; the first that matches reads the path
PATH_SOURCES: Registry[PathSource] = Registry("data path kind")
#: type -> convert(obj) -> Path of a cached file the path sources read (tensors, arrays, torch Datasets)
OBJECT_SOURCES: TypeRegistry[Callable[[Any], Path]] = TypeRegistry("data object")

#: (resolved path, size, mtime_ns) -> blake2b of the file, so repeated loads in one process skip re-hashing
_FILE_IDS: dict[tuple[str, int, int], bytes] = {}


def file_id(path: Path) -> bytes:
    """The blake2b digest of a file's bytes (cached in the process by path, size and modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_IDS:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_IDS[key] = h.digest()
    return _FILE_IDS[key]


def fingerprint(files: Iterable[Path], root: Path | None = None) -> str:
    """The id of some files' names (relative to ``root``) and contents: any change to any of them changes it."""
    h = hashlib.blake2b(digest_size=16)
    for file in files:
        name = str(file.relative_to(root)) if root is not None else file.name
        h.update(name.encode() + b"\0" + file_id(file))
    return h.hexdigest()


def check_fingerprint(path: Path, expected: str | None, now: Callable[[], str]) -> None:
    """Refuse data whose contents changed since the run was made (``expected`` None: not recorded, not checked)."""
    if expected is None:
        return
    got = now()
    if got != expected:
        raise VaelabError(
            f"{path} changed since the run was made (its contents' fingerprint was {expected}, now {got}); restore "
            "the data the run was trained on, or train a new run on the new data"
        )


def describe_data(data: Any, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """The data section's values for ``data``: a ``DATASETS`` name, a path (an image folder, .npy, .npz, .csv) or,
    in Python, a tensor, an array or a torch ``Dataset`` (cached into a file first)."""
    if isinstance(data, str) and data in DATASETS:
        return {"name": data}
    if not isinstance(data, (str, os.PathLike)):
        convert = OBJECT_SOURCES.lookup(data)
        if convert is None:
            raise VaelabError(
                f"cannot train on a {type(data).__name__}; give a data set name, a path, a tensor, a NumPy array "
                "or a torch Dataset yielding tensors or (tensor, label)"
            )
        data = convert(data)
    path = Path(data).expanduser()
    kinds = "; ".join(e.obj.accepts for e in PATH_SOURCES)
    if not path.exists():
        raise VaelabError(
            f"unknown data set {str(data)!r}; choose from: {', '.join(DATASETS.names())}, or give a path: {kinds} "
            "(no such file or folder)"
        )
    for entry in PATH_SOURCES:
        if entry.obj.matches(path):
            return entry.obj.describe(path.resolve(), seed, options)
    raise VaelabError(f"{path} is no data vaelab reads; give {kinds}")
