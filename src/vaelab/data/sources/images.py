"""Image files read on demand with Pillow: from a folder or a zip, resized and cropped, grey or colour, as uint8."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaelab.core.errors import VaelabError
from vaelab.data.base import LazyArray


@dataclass(frozen=True)
class Geometry:
    """How every image is brought to one shape: ``crop`` a centred square of that side first (0: none), then
    ``size``: resize the shorter side to it and center-crop a square (0: keep the size, which must then agree)."""

    size: int = 0
    crop: int = 0
    channels: int = 3


def fit(img: Image.Image, geometry: Geometry) -> Image.Image:
    """One image to the geometry's mode and square size (bilinear, antialiased down-scaling)."""
    mode = "L" if geometry.channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if geometry.crop:
        w, h = img.size
        c = min(geometry.crop, w, h)
        left, top = (w - c) // 2, (h - c) // 2
        img = img.crop((left, top, left + c, top + c))
    if geometry.size:
        w, h = img.size
        scale = geometry.size / min(w, h)
        nw, nh = max(geometry.size, round(w * scale)), max(geometry.size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - geometry.size) // 2, (nh - geometry.size) // 2
        img = img.crop((left, top, left + geometry.size, top + geometry.size))
    return img


class ImageFiles(LazyArray):
    """Images as a (N, C, H, W) uint8 array whose rows are decoded when read.

    ``files`` are paths, or member names of the zip ``archive``; ``shape`` the (C, H, W) they all come to."""

    dtype = np.dtype(np.uint8)

    def __init__(self, files: list[str], geometry: Geometry, shape: tuple[int, int, int], archive: str | None = None):
        self.files, self.geometry, self.archive = list(files), geometry, archive
        self.shape = (len(self.files), *shape)
        self._zip: zipfile.ZipFile | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None}  # each loader process opens the archive itself

    def where(self, i: int) -> str:
        return f"{self.archive}:{self.files[i]}" if self.archive else self.files[i]

    def _open(self, i: int) -> Image.Image:
        if self.archive is None:
            return Image.open(self.files[i])
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.archive)
        return Image.open(self._zip.open(self.files[i]))

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as (C, H, W) uint8; a file Pillow cannot decode, or of another size, is named."""
        try:
            with self._open(i) as img:
                a = np.asarray(fit(img, self.geometry), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, zipfile.BadZipFile) as e:
            raise VaelabError(
                f"{self.where(i)}: cannot read it as an image ({e}); remove or replace the file"
            ) from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if a.shape != self.shape[1:]:
            raise VaelabError(
                f"{self.where(i)} is {a.shape[2]}x{a.shape[1]}, but the images before it are {self.shape[3]}x"
                f"{self.shape[2]}; give them all one size with --set image_size=N (resize, then center-crop)"
            )
        return a

    def rows(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.read(int(i))
        return out


def header(path: Path, data: Any = None) -> tuple[tuple[int, int], str]:
    """(width, height) and mode of an image file (or of its bytes ``data``, a file object), from its header; an
    unreadable file is named."""
    try:
        with Image.open(path if data is None else data) as img:
            return img.size, img.mode
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise VaelabError(f"{path}: cannot read it as an image ({e}); remove or replace the file") from None


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


def image_extensions() -> set[str]:
    """The file endings Pillow opens (.png, .jpg, .bmp, .gif, .tif, .webp, ...)."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
