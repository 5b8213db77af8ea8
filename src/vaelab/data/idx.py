"""Read IDX files (the MNIST format) directly, so MNIST-style data needs no torchvision."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from vaelab.core.errors import VaelabError

#: IDX type code -> big-endian numpy dtype (MNIST uses 0x08, unsigned bytes).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file, gzipped or not; a damaged file raises VaelabError, never garbage."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:  # sniffed, not taken from the suffix: IDX starts with 0x0000
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise VaelabError(f"IDX file {path} does not exist") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _corrupt(path, f"its gzip stream is truncated or damaged ({exc})") from None
    except OSError as exc:
        raise VaelabError(f"cannot read IDX file {path}: {exc}") from None

    if len(raw) < 4:
        raise _corrupt(path, f"it has {len(raw)} bytes, too few for an IDX header")
    if raw[:2] != b"\0\0" or raw[2] not in _DTYPES:
        raise _corrupt(path, f"bad IDX magic 0x{raw[:4].hex()} (expected 0x0000 then a type code such as 08)")
    dtype = np.dtype(_DTYPES[raw[2]])
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise _corrupt(path, f"the header promises {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - offset
    if got != expected:
        what = "truncated" if got < expected else "followed by extra bytes"
        raise _corrupt(
            path, f"the header promises shape {shape} ({expected} bytes) but the data is {what} ({got} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _corrupt(path: Path, detail: str) -> VaelabError:
    return VaelabError(
        f"{path} is truncated or corrupt: {detail}. Delete it and download it again "
        "(or point --data-dir at a folder with a good copy)."
    )
