"""Download helpers: mirrors tried in order, md5-checked, renamed into place so a cache never holds half a file."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATA_ENV

CACHE_ENV = "VAELAB_CACHE"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def cache_dir() -> Path:
    """Where downloads are kept: $VAELAB_CACHE, else ~/.cache/vaelab."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/vaelab").expanduser()


def md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks so large files need little memory."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(urls: list[str], dest: Path, md5: str) -> Path:
    """Download dest from the first mirror that serves it with the right md5; returns dest.

    The bytes go to a temporary file beside dest and are renamed into place only once verified,
    so an interrupted or bad download leaves nothing behind.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(
            f"cannot create the download folder {dest.parent}: {exc}. Set {CACHE_ENV} to a "
            f"writable folder, or pass --data-dir DIR (or set {DATA_ENV}) to a folder "
            f"holding {dest.name}"
        ) from None
    failures: list[str] = []
    mismatches: list[str] = []
    for url in urls:
        tmp = _temp_file(dest)
        try:
            with open(tmp, "wb") as out:
                got = _copy_url(url, out)
            if got == md5:
                os.replace(tmp, dest)
                return dest
            mismatches.append(f"{url}: expected md5 {md5}, got {got}")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            failures.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    if mismatches:
        raise VaelabError(
            f"checksum mismatch downloading {dest.name}, the download was discarded: "
            + "; ".join(mismatches + failures)
        )
    tried = "; ".join(failures) if failures else "no mirror URLs"
    raise VaelabError(
        f"could not download {dest.name} ({tried}). If this machine is offline, copy "
        f"{dest.name} into a folder and pass --data-dir DIR or set {DATA_ENV}=DIR"
    )


def _temp_file(dest: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise VaelabError(
            f"cannot write to the download folder {dest.parent}: {exc}. Set {CACHE_ENV} to a writable folder"
        ) from None
    os.close(fd)
    return Path(name)


def _copy_url(url: str, out: BinaryIO) -> str:
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()
