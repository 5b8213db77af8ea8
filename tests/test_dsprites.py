"""Procedural dSprites: determinism, grid indexing, the fixed-factor sampler, and sprites drawn where expected."""

from __future__ import annotations

import numpy as np
import pytest

from vaelab.core.errors import VaelabError
from vaelab.data.dsprites import DSprites, DSpritesArchive, PackedGrid, arrays
from vaelab.data.factors import FactorValues


@pytest.fixture(scope="module")
def small():
    return DSprites.small()


def test_full_grid_matches_the_original():
    full = DSprites()
    assert full.factor_sizes == (3, 6, 40, 32, 32) and len(full) == 737_280
    assert full.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    images = full.images([0, 737_279])
    assert images.shape == (2, 1, 64, 64) and images.dtype == np.float32
    assert set(np.unique(images)) <= {0.0, 1.0}
    values = full.factor_values(full.index_to_factors([737_279]))[0]
    assert values[1] == 1.0 and values[2] < 2 * np.pi and values[3] == values[4] == 1.0


def test_deterministic(small):
    indices = np.random.default_rng(0).integers(0, len(small), 50)
    np.testing.assert_array_equal(small.images(indices), DSprites.small().images(indices))


def test_index_factor_round_trip(small):
    indices = np.arange(len(small))
    factors = small.index_to_factors(indices)
    assert factors.shape == (len(small), 5)
    np.testing.assert_array_equal(small.factors_to_index(factors), indices)
    np.testing.assert_array_equal(factors[1], [0, 0, 0, 0, 1])  # C order: posY fastest
    with pytest.raises(VaelabError):
        small.index_to_factors([len(small)])
    with pytest.raises(VaelabError):
        small.factors_to_index(np.array([[3, 0, 0, 0, 0]]))


def test_sampling(small):
    rng = np.random.default_rng(0)
    factors = small.sample_factors(500, rng)
    assert factors.shape == (500, 5) and (factors.max(axis=0) < np.array(small.factor_sizes)).all()
    for k, name in enumerate(small.factor_names):
        fixed = small.sample_fixed(name, 100, rng)
        assert len(np.unique(fixed[:, k])) == 1
        others = [j for j in range(5) if j != k]
        assert all(len(np.unique(fixed[:, j])) > 1 for j in others)
    with pytest.raises(VaelabError, match="unknown factor 'colour'"):
        small.sample_fixed("colour", 10, rng)


def test_centre_of_mass_follows_position(small):
    n = small.factor_sizes[3]
    for shape in (0, 1):  # square and ellipse are centrally symmetric
        factors = np.array([[shape, 1, 3, i, n - 1 - i] for i in range(n)])
        images = small.render(factors)[:, 0]
        rows, cols = np.mgrid[0 : small.size, 0 : small.size] + 0.5
        mass = images.sum(axis=(1, 2))
        com_x = (images * cols).sum(axis=(1, 2)) / mass
        com_y = (images * rows).sum(axis=(1, 2)) / mass
        centres = small.centres(factors)
        np.testing.assert_allclose(com_x, centres[:, 0], atol=0.6)
        np.testing.assert_allclose(com_y, centres[:, 1], atol=0.6)
    heart = small.render(np.array([[2, 2, 0, i, 8] for i in range(n)]))[:, 0]
    com_x = (heart * (np.arange(small.size) + 0.5)).sum(axis=(1, 2)) / heart.sum(axis=(1, 2))
    assert (np.diff(com_x) > 0).all()


def test_small_draws_the_original_sprites(small):
    """At the first position the fast variant's 48x48 frame is the top-left crop of the original's 64x64 one."""
    full = DSprites()
    for shape in range(3):
        for scale, full_scale in ((0, 0), (2, 5)):  # 0.5 and 1.0 in both grids
            for orientation in range(10):  # every fourth of the original's 40
                mine = small.images(small.factors_to_index(np.array([[shape, scale, orientation, 0, 0]])))
                theirs = full.images(full.factors_to_index(np.array([[shape, full_scale, 4 * orientation, 0, 0]])))
                assert theirs.sum() == theirs[..., :48, :48].sum() > 0
                np.testing.assert_array_equal(mine, theirs[..., :48, :48])
    assert small.size == 48 and small.factor_sizes == (3, 3, 10, 16, 16)
    with pytest.raises(VaelabError, match="sprites that fit"):
        DSprites(size=16, radius=10.24)
    with pytest.raises(VaelabError, match="sprites that fit"):
        DSprites(radius=0)


def test_area_grows_with_scale_and_shapes_differ():
    d = DSprites(size=64, scales=6, orientations=4, positions=3)
    for shape in range(3):
        area = d.render(np.array([[shape, s, 0, 1, 1] for s in range(6)])).sum(axis=(1, 2, 3))
        assert (np.diff(area) > 0).all()
        assert area[-1] / area[0] == pytest.approx(4.0, rel=0.15)  # scale 0.5 -> 1: four times the area
    images = d.render(np.array([[s, 5, 0, 1, 1] for s in range(3)]))
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    # the ellipse is not round: a quarter turn changes it
    rotated = DSprites(size=64, scales=1, orientations=4, positions=1).render(
        np.array([[1, 0, 0, 0, 0], [1, 0, 1, 0, 0]])
    )
    assert not np.array_equal(rotated[0], rotated[1])
    np.testing.assert_array_equal(rotated[0, 0], rotated[1, 0].T)


def test_arrays_and_archive(tmp_path):
    tiny = DSprites(size=16, scales=2, orientations=2, positions=3)
    data = arrays(tiny, test_fraction=0.25)
    assert len(data.train) + len(data.test) == len(tiny) and data.binary
    np.testing.assert_array_equal(data.test, tiny.images(tiny.factors_to_index(data.test_labels)))
    assert arrays(tiny, limit=10).train.shape[0] + arrays(tiny, limit=10).test.shape[0] == 10
    # an archive in the original layout (colour first) reads back the same images
    factors = tiny.index_to_factors(np.arange(len(tiny)))
    path = tmp_path / "d.npz"
    classes = np.concatenate([np.zeros((len(tiny), 1), np.int64), factors], axis=1)
    np.savez(path, imgs=tiny.render(factors)[:, 0].astype(np.uint8), latents_classes=classes)
    archive = DSpritesArchive(path)
    assert archive.factor_sizes == tiny.factor_sizes
    np.testing.assert_array_equal(archive.images([3, 7]), tiny.images([3, 7]))
    with pytest.raises(VaelabError, match="not found"):
        DSpritesArchive(tmp_path / "missing.npz")


def test_packed_grid_holds_one_bit_a_pixel_and_renders_the_same_images():
    tiny = DSprites(size=20, scales=2, orientations=3, positions=4)  # 400 pixels: not a multiple of 8 per row
    packed = PackedGrid(tiny, batch_size=7)
    factors = tiny.sample_factors(50, np.random.default_rng(0))
    np.testing.assert_array_equal(packed.render(factors), tiny.render(factors))
    assert packed.bits.shape == (len(tiny), 50) and packed.bits.dtype == np.uint8  # 400 bits = 50 bytes an image
    # the full 64x64 grid at one bit a pixel: 737,280 x 512 bytes
    assert len(DSprites()) * 64 * 64 // 8 == 377_487_360
    with pytest.raises(VaelabError, match="binary images only"):
        _ = PackedGrid(FactorValues((3, 4))).bits


def test_registered_and_factors_flow_as_labels(tmp_path):
    from vaelab.data import DATASETS, DataConfig, load_dataset
    from vaelab.data.dsprites import find_archive, load_dsprites
    from vaelab.data.factors import factor_source

    assert {"dsprites", "dsprites-small"} <= set(DATASETS.names())
    data = load_dataset(DataConfig("dsprites-small"), seed=0, binary_model=True)
    assert data.shape == (1, 48, 48) and not data.dynamic  # already binary: no resampling
    assert len(data.train) + len(data.val) + len(data.test) == 23_040
    assert data.labels("train").shape == (len(data.train), 5)
    small = factor_source("dsprites-small")
    np.testing.assert_array_equal(data.test[:5].numpy(), small.render(data.labels("test")[:5].numpy()))
    with pytest.raises(VaelabError, match=r"has no ground-truth factors.*dsprites, dsprites-small"):
        factor_source("digits")
    # dsprites: the procedural full grid, unless the original archive is found (then both read it)
    source = factor_source("dsprites", tmp_path)  # held bit-packed for the metrics, packed on first use
    packed = isinstance(source, PackedGrid) and isinstance(source.source, DSprites)
    assert packed or find_archive(tmp_path) is not None
    tiny = load_dsprites(tmp_path, images=20)
    assert tiny.train.shape[1:] == (1, 64, 64) and len(tiny.train) + len(tiny.test) == 20


def test_a_run_draws_as_many_dsprites_images_as_it_asks_up_to_the_whole_grid(tmp_path):
    """``images`` sets how many of the 737,280 a dsprites run draws (Locatello et al. train on all of them); the
    labels are the factors of the very images drawn; sizes outside 2..737,280 and other data sets are refused."""
    from vaelab.data import DataConfig, load_dataset
    from vaelab.data.dsprites import DEFAULT_IMAGES
    from vaelab.data.factors import factor_source

    data = load_dataset(DataConfig("dsprites", data_dir=str(tmp_path), images=40), seed=0, binary_model=True)
    assert len(data.train) + len(data.val) + len(data.test) == 40 and data.shape == (1, 64, 64)
    grid = factor_source("dsprites", tmp_path).source
    np.testing.assert_array_equal(data.test.numpy(), grid.render(data.labels("test").numpy()))
    assert DataConfig("dsprites").images == 0 and DEFAULT_IMAGES == 100_000  # 0: the default draw
    for images, message in [(737_281, "from 2 to the 737,280 images"), (1, "from 2 to the 737,280 images")]:
        with pytest.raises(VaelabError, match=message):
            load_dataset(DataConfig("dsprites", data_dir=str(tmp_path), images=images), seed=0, binary_model=True)
    with pytest.raises(VaelabError, match="must be >= 0"):
        DataConfig("dsprites", images=-1)
    with pytest.raises(VaelabError, match="has no option images; it applies to: dsprites"):
        DataConfig("dsprites-small", images=10)
