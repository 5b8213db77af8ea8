"""One persistence format for every configured module: a folder with ``config.json`` and ``model.safetensors``.

    FOLDER/config.json        {"format": "vaelab-module", "version": 1, "name": <registered name>,
                               "config": {...the module's typed config...}, "data": {"shape": [...], "size": N}}
    FOLDER/model.safetensors  the state dict, with the metadata {"format", "name", "weights_id"}

No pickle anywhere: a foreign, truncated or mismatched folder is refused with one line. ``weights_id`` is a random
id written with every save, so that what was derived from these weights (a VQ run's code prior) can tell whether
the weights changed since. The module classes are found by name through a registry (``MODELS``); this file knows
nothing of them.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vaelab.core.errors import VaelabError, WriteError

MODULE_FORMAT = "vaelab-module"
MODULE_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


#: the suffix of atomic writes' temporary files (``.NAME.XXXXXXXX.tmp`` beside NAME); a killed write leaves one
TEMP_SUFFIX = ".tmp"


def write_failure(path: Path, error: BaseException) -> WriteError:
    """One line naming the file and what to do, for an OSError or a C++ stream error of torch.save."""
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or "No space" in str(error):
        why = "no space is left on the device; free some space, or write to another disk"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = f"{os.strerror(code)}: the folder is read-only or not yours; make it writable, or write elsewhere"
    elif isinstance(error, OSError) and error.strerror:
        why = error.strerror
    else:  # torch.save's stream errors (basic_ios::clear, "file write failed") say nothing of the cause
        why = f"the write failed ({str(error).splitlines()[0][:120]}); is the disk full or the folder read-only?"
    return WriteError(f"cannot write {path}: {why}")


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a file.

    The file gets the permissions of an ordinary new file (the umask applies), not mkstemp's 0600. A full disk or a
    read-only folder raises ``WriteError`` (one line), and the previous version of the file stays as it was."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # after the write: a writer may have made the file anew
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise write_failure(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``folder`` (call it holding the folder's lock)."""
    removed = []
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def save_module(folder: str | os.PathLike, name: str, config: dict, data: dict, state: dict[str, torch.Tensor]) -> Path:
    """Write a module folder; returns it. The weights go first, so a folder with a config always has weights."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failure(folder, e) from None
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = {"format": MODULE_FORMAT, "name": name, "weights_id": uuid.uuid4().hex}
    atomic_write(folder / WEIGHTS, lambda p: save_file(tensors, p, metadata=meta))
    spec = {"format": MODULE_FORMAT, "version": MODULE_VERSION, "name": name, "config": config, "data": data}
    write_text(folder / CONFIG, json.dumps(spec, indent=2))
    return folder


def read_module_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a module folder, checked to be one."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise VaelabError(f"{folder} does not exist (from_pretrained needs a folder written by save_pretrained)")
    if not path.is_file():
        raise VaelabError(f"{folder} is not a saved vaelab module: it has no {CONFIG}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(
            f"{path} is not valid JSON ({e}); the folder is corrupt or not a saved vaelab module"
        ) from None
    if not isinstance(spec, dict) or spec.get("format") != MODULE_FORMAT or "name" not in spec:
        raise VaelabError(f'{path} does not describe a saved vaelab module (no "format": "{MODULE_FORMAT}")')
    if spec.get("version", 0) > MODULE_VERSION:
        raise VaelabError(f"{path} was written by a newer vaelab (format version {spec['version']}); upgrade vaelab")
    return spec


def weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a weights file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise VaelabError(f"weights file {path} is truncated or corrupt ({e})") from None


def weights_id(folder: str | os.PathLike) -> str | None:
    """The random id of the weights in a module folder (None for a folder without weights)."""
    path = Path(folder) / WEIGHTS
    return weights_metadata(path).get("weights_id") if path.is_file() else None


def load_state(module: torch.nn.Module, folder: str | os.PathLike, name: str) -> None:
    """Load FOLDER/model.safetensors into ``module`` strictly; refuse another module's or a damaged file."""
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise VaelabError(f"{folder} has no trained weights ({WEIGHTS} is missing)")
    meta = weights_metadata(path)
    if meta.get("format") != MODULE_FORMAT:
        raise VaelabError(f"{path} is not a vaelab weights file (its metadata names no vaelab format)")
    if meta.get("name") != name:
        raise VaelabError(f"{path} holds the weights of a {meta.get('name')!r} model, but config.json says {name!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VaelabError(f"weights file {path} is truncated or corrupt ({e})") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = " ".join(line.strip() for line in str(e).splitlines()[1:2]) or str(e).splitlines()[0]
        raise VaelabError(
            f"the weights in {path} do not fit the model described in its config.json ({first})"
        ) from None
