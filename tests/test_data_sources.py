"""Data sources on small fake IDX files: reading, md5 checks, lookup in a folder, downloads from file:// mirrors."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from vaelab.core.errors import VaelabError
from vaelab.data import digits, mnist
from vaelab.data.base import DATA_ENV, DATASETS, resolve_data_dir
from vaelab.data.download import CACHE_ENV, fetch, md5
from vaelab.data.idx import read_idx

N_TRAIN, N_TEST = 6, 4


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed uint8 IDX file holding array."""
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write array as IDX, gzipped with a fixed mtime so the md5 is reproducible."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_fake_mnist(folder: Path, seed: int = 0) -> dict[str, str]:
    """The four MNIST file names with tiny random contents; returns their md5s."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        mnist.TRAIN_IMAGES: rng.integers(0, 256, (N_TRAIN, 28, 28)),
        mnist.TRAIN_LABELS: rng.integers(0, 10, N_TRAIN),
        mnist.TEST_IMAGES: rng.integers(0, 256, (N_TEST, 28, 28)),
        mnist.TEST_LABELS: rng.integers(0, 10, N_TEST),
    }
    return {name: md5(write_idx(folder / name, a)) for name, a in arrays.items()}


def use_fake_source(monkeypatch, md5s: dict[str, str], mirrors: tuple[str, ...] = (), name: str = "mnist"):
    monkeypatch.setitem(mnist.SOURCES, name, dataclasses.replace(mnist.SOURCES[name], md5s=md5s, mirrors=mirrors))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- read_idx ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    got = read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, array)


def test_read_idx_truncated_gz(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.arange(1000, dtype=np.int64).reshape(10, 100) % 256)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(VaelabError, match=r"truncated|corrupt") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("cut", [2, 6, 15])  # inside the magic, inside the dims, inside the data
def test_read_idx_fewer_bytes_than_header_promises(tmp_path, cut):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 4)))[:cut])
    with pytest.raises(VaelabError, match="truncated"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3))) + b"junk")
    with pytest.raises(VaelabError, match="corrupt"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\0\0\x07\x01", b"PK\x03\x04"])
def test_read_idx_wrong_magic(tmp_path, magic):
    path = tmp_path / "a.idx"
    path.write_bytes(magic + b"\0\0\0\x01" + b"\0")
    with pytest.raises(VaelabError, match="magic") as err:
        read_idx(path)
    assert "delete" in str(err.value).lower()


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(VaelabError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


# --- loading from a given folder --------------------------------------------------------------------------


def check_fake(data):
    assert data.train.shape == (N_TRAIN, 1, 28, 28) and data.test.shape == (N_TEST, 1, 28, 28)
    assert data.train.dtype == np.float32 and 0.0 <= data.train.min() and data.train.max() <= 1.0
    assert data.train_labels.dtype == np.int64 and data.train_labels.shape == (N_TRAIN,)
    assert data.test_labels.shape == (N_TEST,) and set(data.test_labels) <= set(range(10))
    assert not data.binary


def test_registered():
    for name in ("mnist", "fashion-mnist", "digits"):
        assert name in DATASETS
    assert "60k train" in DATASETS.entry("fashion-mnist").description


def test_mnist_from_subfolder(tmp_path, monkeypatch):
    use_fake_source(monkeypatch, write_fake_mnist(tmp_path / "mnist"))
    check_fake(DATASETS.get("mnist")(tmp_path))


def test_mnist_from_folder_itself(tmp_path, monkeypatch):
    md5s = write_fake_mnist(tmp_path)
    use_fake_source(monkeypatch, md5s)
    data = mnist.load_mnist(tmp_path)
    check_fake(data)
    raw = read_idx(tmp_path / mnist.TRAIN_IMAGES)
    np.testing.assert_allclose(data.train[:, 0] * 255.0, raw, atol=1e-3)


def test_data_dir_from_env(tmp_path, monkeypatch):
    use_fake_source(monkeypatch, write_fake_mnist(tmp_path / "mnist"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    check_fake(mnist.load_mnist(resolve_data_dir(None)))


def test_wrong_md5_names_file(tmp_path, monkeypatch):
    md5s = write_fake_mnist(tmp_path)
    use_fake_source(monkeypatch, {**md5s, mnist.TEST_LABELS: "0" * 32})
    with pytest.raises(VaelabError) as err:
        mnist.load_mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / mnist.TEST_LABELS) in msg and "0" * 32 in msg and md5s[mnist.TEST_LABELS] in msg


def test_changed_file_is_checked_again(tmp_path, monkeypatch):
    """The in-memory md5 cache must notice a file replaced between loads."""
    use_fake_source(monkeypatch, write_fake_mnist(tmp_path))
    mnist.load_mnist(tmp_path)
    path = tmp_path / mnist.TRAIN_LABELS
    write_idx(path, np.zeros(N_TRAIN + 1))
    with pytest.raises(VaelabError, match="wrong md5"):
        mnist.load_mnist(tmp_path)


def test_other_data_set_is_named(tmp_path, monkeypatch):
    """Pointing fashion-mnist at MNIST files says so instead of only 'wrong md5'."""
    md5s = write_fake_mnist(tmp_path)
    use_fake_source(monkeypatch, md5s)
    with pytest.raises(VaelabError, match="it is the mnist file"):
        mnist.load_fashion_mnist(tmp_path)


def test_missing_files_in_data_dir(tmp_path, cache):
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / mnist.TRAIN_IMAGES).write_bytes(b"")
    with pytest.raises(VaelabError) as err:
        mnist.load_fashion_mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "fashion-mnist") in msg and all(f in msg for f in mnist.FILES)
    assert not cache.exists()  # a given folder never triggers a download


# --- downloads ---------------------------------------------------------------------------------------------


def test_download_from_mirrors(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    md5s = write_fake_mnist(mirror)
    dead = (tmp_path / "dead").as_uri() + "/"
    use_fake_source(monkeypatch, md5s, (dead, mirror.as_uri() + "/"))
    check_fake(mnist.load_mnist(None))
    assert sorted(os.listdir(cache / "mnist")) == sorted(mnist.FILES)
    assert {f: md5(cache / "mnist" / f) for f in mnist.FILES} == md5s
    for f in mnist.FILES:
        (mirror / f).unlink()
    check_fake(mnist.load_mnist(None))  # served from the cache now


def test_corrupt_download_leaves_nothing(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    md5s = write_fake_mnist(mirror)
    (mirror / mnist.TRAIN_IMAGES).write_bytes(b"not the file")
    use_fake_source(monkeypatch, md5s, (mirror.as_uri() + "/",))
    with pytest.raises(VaelabError) as err:
        mnist.load_mnist(None)
    msg = str(err.value)
    assert "mismatch" in msg and md5s[mnist.TRAIN_IMAGES] in msg and md5(mirror / mnist.TRAIN_IMAGES) in msg
    assert (mirror / mnist.TRAIN_IMAGES).as_uri() in msg
    assert os.listdir(cache / "mnist") == []


def test_all_mirrors_fail(tmp_path, cache, monkeypatch):
    use_fake_source(
        monkeypatch,
        write_fake_mnist(tmp_path / "elsewhere"),
        ((tmp_path / "a").as_uri() + "/", (tmp_path / "b").as_uri() + "/"),
    )
    with pytest.raises(VaelabError) as err:
        mnist.load_mnist(None)
    msg = str(err.value)
    assert "--data-dir" in msg and DATA_ENV in msg and mnist.TRAIN_IMAGES in msg
    assert os.listdir(cache / "mnist") == []


def test_fetch_returns_dest(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    dest = tmp_path / "deep" / "dest.bin"
    assert fetch([src.as_uri()], dest, md5(src)) == dest
    assert dest.read_bytes() == b"hello" and os.listdir(dest.parent) == ["dest.bin"]


# --- digits ------------------------------------------------------------------------------------------------


def test_digits():
    a, b = digits.load_digits(None), DATASETS.get("digits")(Path("/ignored"))
    assert a.train.shape == (1500, 1, 8, 8) and a.test.shape == (297, 1, 8, 8)
    assert a.train.dtype == np.float32 and a.train.min() == 0.0 and a.train.max() == 1.0
    assert a.train_labels.dtype == np.int64 and set(a.test_labels) == set(range(10))
    for x, y in [(a.train, b.train), (a.test, b.test), (a.train_labels, b.train_labels)]:
        np.testing.assert_array_equal(x, y)


def test_digits_split_ignores_run_seed():
    np.random.seed(123)
    first = digits.load_digits(None).test
    np.random.seed(7)
    np.testing.assert_array_equal(first, digits.load_digits(None).test)


# --- the real files, when a data folder is configured ---------------------------------------------------------


@pytest.mark.skipif(not os.environ.get(DATA_ENV), reason=f"set {DATA_ENV} to a folder with mnist/ and fashion-mnist/")
def test_real_mnist_and_fashion():
    data_dir = resolve_data_dir(None)
    for name in ("mnist", "fashion-mnist"):
        data = DATASETS.get(name)(data_dir)
        assert data.train.shape == (60000, 1, 28, 28) and data.test.shape == (10000, 1, 28, 28)
        assert data.train.dtype == np.float32 and data.train.min() == 0.0 and data.train.max() == 1.0
        assert data.train_labels.shape == (60000,) and data.test_labels.shape == (10000,)
        for labels in (data.train_labels, data.test_labels):
            assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 9
