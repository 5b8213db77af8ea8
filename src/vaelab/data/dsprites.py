"""dSprites: binary images of 2-D shapes from 5 independent factors (Matthey et al. 2017), generated procedurally.

Factors (indices into a full grid, C order as in the original file, the last factor fastest):

shape        3   square, ellipse, heart
scale        6   linspace(0.5, 1, 6)
orientation  40  linspace(0, 2 pi, 40, endpoint=False)
posX, posY   32  linspace(0, 1, 32): the centre moves over [margin, size - margin] so every sprite stays inside

that is 737,280 images of 64x64. A sprite is drawn by testing each pixel centre against the shape's implicit
inequality in the sprite's own frame: with d = (x - cx, y - cy) / (R s) (image y points down, R = 0.16 size the
half-extent at scale 1, by default) and (u, v) = rotate(d, -theta),

square   max(|u|, |v|) <= 1
ellipse  u^2 + (v / 0.5)^2 <= 1
heart    (a^2 + b^2 - 1)^3 - a^2 b^3 <= 0,  a = 1.14 u,  b = 0.118 - 1.118 v   (point down at theta = 0)

Images are rendered on demand, a batch at a time; the full grid is never held as floats unless asked (``arrays``).
``DSpritesArchive`` reads the original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` with the same interface.
``PackedGrid`` holds a binary grid at one bit a pixel (the 737,280 64x64 images in 377 MB, against 12 GB as float32
and 3 GB as uint8) and unpacks the rows asked for, a batch at a time: what the disentanglement metrics of a
``dsprites`` run sample from, so they draw from the whole grid.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data.base import DATASETS, ImageArrays, LazyArray
from vaelab.data.factors import FACTOR_SOURCES, CachedGrid, FactorDataset

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
HALF_EXTENT = 0.16  # sprite half-extent at scale 1, as a share of the image size
ARCHIVE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SPLIT_SEED = 0  # fixed, so the train/test split is the same whatever seed a run uses
CHUNK = 1024  # images rendered at once (bounds the temporaries: CHUNK x size x size floats)


class DSprites(FactorDataset):
    """Procedural dSprites; ``DSprites()`` is the original grid, ``DSprites.small()`` the fast 48x48 variant."""

    categorical = (True, False, False, False, False)
    factor_names = FACTOR_NAMES

    def __init__(
        self, size: int = 64, scales: int = 6, orientations: int = 40, positions: int = 32, radius: float | None = None
    ) -> None:
        """``radius``: the sprite half-extent at scale 1 in pixels (default HALF_EXTENT * size, the original's)."""
        radius = HALF_EXTENT * size if radius is None else float(radius)
        margin = radius * math.sqrt(2) + 0.5  # the largest sprite (a square at 45 degrees) stays inside
        if size < 8 or min(scales, orientations, positions) < 1 or radius <= 0 or 2 * margin > size:
            raise VaelabError(
                f"dsprites needs size >= 8, at least one value per factor and sprites that fit (0 < radius, "
                f"2 (radius sqrt 2 + 0.5) <= size), got size={size}, scales={scales}, orientations={orientations}, "
                f"positions={positions}, radius={radius}"
            )
        self.size = int(size)
        self.factor_sizes = (len(SHAPES), int(scales), int(orientations), int(positions), int(positions))
        self.scales = np.linspace(0.5, 1.0, scales) if scales > 1 else np.ones(1)
        self.orientations = np.linspace(0.0, 2 * math.pi, orientations, endpoint=False)
        self.radius = radius
        steps = np.linspace(0.0, 1.0, positions) if positions > 1 else np.full(1, 0.5)
        self.positions = margin + steps * (size - 2 * margin)

    @classmethod
    def small(cls) -> DSprites:
        """The fast variant: 3 shapes x 3 scales x 10 orientations x 16 x 16 positions (23,040 images).

        Its sprites are the original's, pixel for pixel (radius 0.16 * 64), moved in steps of 1.2 px (the original:
        1.1) over half as many positions, hence a 48x48 frame. Why not the original frame scaled down: β acts per
        pixel, and at 32x32 (sprites of 5-10 px) β = 4 found a shape not worth its nats and dropped it.
        """
        return cls(size=48, scales=3, orientations=10, positions=16, radius=HALF_EXTENT * 64)

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices (N, 5) -> values (N, 5): shape id, scale, orientation (rad), posX, posY in [0, 1]."""
        factors = self._check_factors(factors)
        n_pos = self.factor_sizes[3]
        pos = np.linspace(0.0, 1.0, n_pos) if n_pos > 1 else np.full(1, 0.5)
        return np.stack(
            [
                factors[:, 0].astype(np.float64),
                self.scales[factors[:, 1]],
                self.orientations[factors[:, 2]],
                pos[factors[:, 3]],
                pos[factors[:, 4]],
            ],
            axis=-1,
        )

    def centres(self, factors: np.ndarray) -> np.ndarray:
        """Sprite centres (N, 2) in pixels, (x, y) with y down, for factor indices (N, 5)."""
        factors = self._check_factors(factors)
        return np.stack([self.positions[factors[:, 3]], self.positions[factors[:, 4]]], axis=-1)

    def render(self, factors: np.ndarray) -> np.ndarray:
        """Binary images (N, 1, size, size) float32 for factor indices (N, 5)."""
        factors = self._check_factors(factors)
        out = np.empty((len(factors), 1, self.size, self.size), dtype=np.float32)
        for start in range(0, len(factors), CHUNK):
            out[start : start + CHUNK, 0] = self._render_chunk(factors[start : start + CHUNK])
        return out

    def _render_chunk(self, factors: np.ndarray) -> np.ndarray:
        grid = np.arange(self.size, dtype=np.float32) + 0.5  # pixel centres
        centre = self.centres(factors).astype(np.float32)
        extent = (self.radius * self.scales[factors[:, 1]]).astype(np.float32)[:, None, None]
        theta = self.orientations[factors[:, 2]]
        cos, sin = np.cos(theta).astype(np.float32)[:, None, None], np.sin(theta).astype(np.float32)[:, None, None]
        dx = (grid[None, None, :] - centre[:, 0, None, None]) / extent  # (n, 1, size): columns
        dy = (grid[None, :, None] - centre[:, 1, None, None]) / extent  # (n, size, 1): rows
        u = cos * dx + sin * dy
        v = -sin * dx + cos * dy
        shape = factors[:, 0]
        inside = np.zeros(u.shape, dtype=bool)
        for s, name in enumerate(SHAPES):
            rows = shape == s
            if rows.any():
                inside[rows] = _inside(name, u[rows], v[rows])
        return inside.astype(np.float32)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The shape's implicit inequality at sprite-frame coordinates (u, v), extent 1 at unit scale."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == "ellipse":
        return u**2 + (v / 0.5) ** 2 <= 1.0
    a, b = 1.14 * u, 0.118 - 1.118 * v
    return (a**2 + b**2 - 1.0) ** 3 - a**2 * b**3 <= 0.0


class DSpritesArchive(FactorDataset):
    """The original dSprites file (``imgs`` (737280, 64, 64) uint8, ``latents_classes`` (N, 6)), read once."""

    categorical = DSprites.categorical
    factor_names = FACTOR_NAMES

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise VaelabError(f"dSprites archive not found: {path}")
        with np.load(path, allow_pickle=False) as archive:
            if "imgs" not in archive or "latents_classes" not in archive:
                raise VaelabError(f"{path} is not a dSprites archive: it lacks 'imgs' or 'latents_classes'")
            imgs = archive["imgs"]
            classes = archive["latents_classes"]
        self.factor_sizes = tuple(int(c) + 1 for c in classes[:, 1:].max(axis=0))  # drop colour (one value)
        if len(imgs) != len(self) or not np.array_equal(classes[:, 1:], self.index_to_factors(np.arange(len(self)))):
            raise VaelabError(f"{path}: the images are not in the grid order of the factors {self.factor_sizes}")
        self.size = int(imgs.shape[-1])
        self.bits = np.packbits(imgs.reshape(len(imgs), -1) > 0, axis=1)  # 1 bit a pixel: 377 MB, not 3 GB
        del imgs

    def render(self, factors: np.ndarray) -> np.ndarray:
        """Binary images (N, 1, size, size) float32, unpacked from the bits of the archive's images."""
        rows = np.unpackbits(self.bits[self.factors_to_index(factors)], axis=1, count=self.size * self.size)
        return rows.reshape(len(rows), 1, self.size, self.size).astype(np.float32)


class PackedGrid(FactorDataset):
    """Another binary factor data set with every image held at one bit a pixel, packed on first use (the 737,280
    64x64 dSprites: 377 MB, about 2.5 minutes of rendering on one CPU thread); ``render`` unpacks the rows asked."""

    def __init__(self, source: FactorDataset, batch_size: int = 8192) -> None:
        self.source, self.batch_size = source, batch_size
        self.factor_names, self.factor_sizes = source.factor_names, source.factor_sizes
        self.categorical = source.categorical
        self.shape = tuple(source.images([0]).shape[1:])
        self._bits: np.ndarray | None = None

    @property
    def bits(self) -> np.ndarray:
        """The packed images (N, ceil(pixels / 8)) uint8, grid order; built on first use."""
        if self._bits is None:
            pixels = int(np.prod(self.shape))
            bits = np.empty((len(self), (pixels + 7) // 8), dtype=np.uint8)
            with Progress(len(self), f"packing {len(self):,} images at 1 bit a pixel", "images") as progress:
                for start in range(0, len(self), self.batch_size):
                    images = self.source.images(np.arange(start, min(start + self.batch_size, len(self))))
                    if not np.isin(images, (0.0, 1.0)).all():
                        raise VaelabError("PackedGrid holds binary images only; this source's are not all 0 or 1")
                    bits[start : start + len(images)] = np.packbits(images.reshape(len(images), -1) > 0.5, axis=1)
                    progress.advance(len(images))
            self._bits = bits
        return self._bits

    def render(self, factors: np.ndarray) -> np.ndarray:
        """Images (N, *shape) float32 0/1, unpacked from the packed grid."""
        pixels = int(np.prod(self.shape))
        rows = np.unpackbits(self.bits[self.factors_to_index(factors)], axis=1, count=pixels)
        return rows.reshape(len(rows), *self.shape).astype(np.float32)


def find_archive(data_dir: Path | None) -> Path | None:
    """The original archive under data_dir (or data_dir/dsprites), else under ../shared/data/dsprites, else None."""
    folders = [data_dir, data_dir / "dsprites"] if data_dir is not None else []
    folders.append(Path.cwd().parent / "shared" / "data" / "dsprites")
    for folder in folders:
        if (folder / ARCHIVE_NAME).is_file():
            return folder / ARCHIVE_NAME
    return None


def arrays(
    source: FactorDataset, test_fraction: float = 0.1, limit: int | None = None, lazy: bool = False
) -> ImageArrays:
    """Materialise a factor data set as ImageArrays (binary), factor indices (N, K) int64 as the labels.

    The images are shuffled with a fixed seed; ``limit`` keeps only that many (a random subset of the grid), and
    a ``test_fraction`` share of them is the test split. The full 64x64 grid is 12 GB as float32: use ``limit``,
    or ``lazy`` (images drawn when read, as bool: held on the device as bits, the full grid takes 377 MB).
    """
    if not 0 < test_fraction < 1:
        raise VaelabError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(source))
    if limit is not None:
        if limit < 2:
            raise VaelabError(f"limit must be >= 2 images, got {limit}")
        order = order[:limit]
    n_test = max(1, round(len(order) * test_fraction))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    images = (lambda idx: FactorImages(source, idx)) if lazy else (lambda idx: _images(source, idx))
    return ImageArrays(
        train=images(train_idx),
        test=images(test_idx),
        train_labels=source.index_to_factors(train_idx),
        test_labels=source.index_to_factors(test_idx),
        binary=True,
    )


class FactorImages(LazyArray):
    """The images of some grid indices as a bool (N, C, H, W) array, drawn when read."""

    dtype = np.dtype(np.bool_)

    def __init__(self, source: FactorDataset, indices: np.ndarray) -> None:
        self.source, self.indices = source, np.asarray(indices)
        self.shape = (len(self.indices), *source.images(np.array([0])).shape[1:])

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return self.source.images(self.indices[indices]) != 0


def _images(source: FactorDataset, indices: np.ndarray, batch: int = 16384) -> np.ndarray:
    first = source.images(indices[:1])
    out = np.empty((len(indices), *first.shape[1:]), dtype=np.float32)
    for start in range(0, len(indices), batch):
        out[start : start + batch] = source.images(indices[start : start + batch])
    return out


def dsprites_source(data_dir: Path | None = None, prefer_archive: bool = True) -> FactorDataset:
    """The original archive when one is found (see ``find_archive``), else the procedural full grid."""
    path = find_archive(data_dir) if prefer_archive else None
    return DSpritesArchive(path) if path is not None else DSprites()


def small_source(data_dir: Path | None = None) -> FactorDataset:
    """The fast 48x48 grid, every image drawn once and kept (data_dir is ignored: it is always generated)."""
    return CachedGrid(DSprites.small())


def packed_source(data_dir: Path | None = None) -> FactorDataset:
    """The full dSprites grid for the disentanglement metrics: the archive (held packed) when found, else the
    procedural grid packed at one bit a pixel on first use (``PackedGrid``)."""
    source = dsprites_source(data_dir)
    return source if isinstance(source, DSpritesArchive) else PackedGrid(source)


FACTOR_SOURCES["dsprites"] = packed_source
FACTOR_SOURCES["dsprites-small"] = small_source

#: images a ``dsprites`` run draws from the grid unless ``images`` says otherwise
DEFAULT_IMAGES = 100_000


@DATASETS.register(
    "dsprites",
    "dSprites 64x64 binary sprites, 5 factors (Matthey 2017): 100,000 images drawn from the full grid "
    f"of 737,280 (--set images=737280: all of them), procedural (or the original {ARCHIVE_NAME} when found)",
    kind="images",
    shape=(1, 64, 64),
    options=("images",),
)
def load_dsprites(data_dir: Path | None, images: int = DEFAULT_IMAGES) -> ImageArrays:
    """Loader for the ``dsprites`` registry entry: a fixed random ``images`` of the full grid (all 737,280 of them
    as Locatello et al. train on, or by default 100,000: a tenth of the time to draw), held at one bit a pixel."""
    source = dsprites_source(data_dir)
    if not 2 <= images <= len(source):
        raise VaelabError(f"images must be from 2 to the {len(source):,} images of the dSprites grid, got {images:,}")
    return arrays(source, limit=images, lazy=True)


@DATASETS.register(
    "dsprites-small",
    "dSprites 48x48, the original's sprites on 3 shapes x 3 scales x 10 orientations x 16 x 16 positions "
    "(23,040 images, all of them), procedural: the fast variant",
    kind="images",
    shape=(1, 48, 48),
)
def load_dsprites_small(data_dir: Path | None) -> ImageArrays:
    """Loader for ``dsprites-small``: the whole 48x48 fast grid (23,040 images, 212 MB), drawn once per process."""
    return _small_arrays()


@functools.lru_cache(maxsize=1)
def _small_arrays() -> ImageArrays:
    return arrays(DSprites.small())
