"""The binarized-mnist data set on small fake files (npz and MAT), its content checks and download; the real files
when $VAELAB_DATA points at them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, load_dataset
from vaelab.data import binarized_mnist as bm
from vaelab.data.download import CACHE_ENV, md5

ROWS = {"train": 12, "valid": 5, "test": 10}


def fake_splits(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: (rng.random((n, 784)) < 0.3).astype(np.uint8) for s, n in ROWS.items()}


@pytest.fixture
def fake(monkeypatch) -> dict[str, np.ndarray]:
    """Fake splits, with the module's expected sizes, content md5s and test label counts swapped to match them."""
    splits = fake_splits()
    monkeypatch.setattr(bm, "ROWS", ROWS)
    monkeypatch.setattr(bm, "CONTENT_MD5", {s: hashlib.md5(a.tobytes()).hexdigest() for s, a in splits.items()})
    monkeypatch.setattr(bm, "TEST_LABEL_COUNTS", (3, 0, 2, 0, 0, 0, 0, 5, 0, 0))
    return splits


def write_npz(folder: Path, splits: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / bm.NPZ, **splits)
    return folder / bm.NPZ


def write_mats(folder: Path, splits: dict[str, np.ndarray], names=bm.mat_file) -> dict[str, str]:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for s, a in splits.items():
        savemat(str(folder / names(s)), {"X": a})
    return {s: md5(folder / names(s)) for s in splits}


def test_npz_in_a_subfolder(tmp_path, fake):
    write_npz(tmp_path / "binarized-mnist", fake)
    data = load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path), val_fraction=0.5), 0, "cpu", True)
    assert data.shape == (1, 28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 5, 10)  # the shipped split; val_fraction unused
    assert not data.dynamic  # already binary: never binarized again
    torch.testing.assert_close(data.val.reshape(5, 784), torch.from_numpy(fake["valid"]).float())
    torch.testing.assert_close(data.test.reshape(10, 784), torch.from_numpy(fake["test"]).float())
    assert data.test_labels.tolist() == [0, 0, 0, 2, 2, 7, 7, 7, 7, 7]
    assert data.train_labels is None and data.val_labels is None


def test_mat_files_in_the_folder_itself(tmp_path, fake):
    write_mats(tmp_path, fake)
    data = load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0, "cpu", True)
    torch.testing.assert_close(data.train.reshape(12, 784), torch.from_numpy(fake["train"]).float())


def test_content_is_checked(tmp_path, fake):
    bad = dict(fake)
    bad["valid"] = fake["valid"].copy()
    bad["valid"][0, 0] ^= 1  # one pixel flipped
    write_npz(tmp_path, bad)
    with pytest.raises(VaelabError, match="valid split's pixels have md5") as err:
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)
    assert "corrupt" in str(err.value)
    write_npz(tmp_path, {**fake, "test": fake["test"][:7]})
    with pytest.raises(VaelabError, match=r"test split has shape \(7, 784\), expected \(10, 784\)"):
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)
    write_npz(tmp_path, {"train": fake["train"], "test": fake["test"]})
    with pytest.raises(VaelabError, match="lacks the key"):
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)


def test_truncated_npz(tmp_path, fake):
    path = write_npz(tmp_path, fake)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(VaelabError, match="truncated or corrupt"):
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)
    path.unlink()
    write_mats(tmp_path, fake)
    mat = tmp_path / bm.mat_file("test")
    mat.write_bytes(mat.read_bytes()[:200])
    with pytest.raises(VaelabError, match=r"binarized_mnist_test\.mat: it is truncated or corrupt"):
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(VaelabError, match="binarized-mnist not found") as err:
        load_dataset(DataConfig(name="binarized-mnist", data_dir=str(tmp_path)), 0)
    assert bm.NPZ in str(err.value) and "binarized_mnist_valid.mat" in str(err.value)


def test_download_into_the_cache(tmp_path, fake, monkeypatch):
    mirror = tmp_path / "mirror"
    monkeypatch.setattr(bm, "MAT_MD5", write_mats(mirror, fake, lambda s: f"binarized_mnist_{s}.amat"))
    monkeypatch.setattr(bm, "MIRRORS", (mirror.as_uri() + "/",))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    data = load_dataset(DataConfig(name="binarized-mnist"), 0)
    assert len(data.train) == 12
    assert sorted(p.name for p in (tmp_path / "cache" / "binarized-mnist").iterdir()) == [
        bm.mat_file(s) for s in ("test", "train", "valid")
    ]


@pytest.mark.skipif(not os.environ.get("VAELAB_DATA"), reason="set VAELAB_DATA to a folder with binarized-mnist/")
def test_real_binarized_mnist():
    data = load_dataset(DataConfig(name="binarized-mnist"), 0, "cpu", True)
    assert (len(data.train), len(data.val), len(data.test)) == (50_000, 10_000, 10_000)
    assert not data.dynamic and set(torch.unique(data.train).tolist()) == {0.0, 1.0}
    assert torch.bincount(data.test_labels).tolist() == list(bm.TEST_LABEL_COUNTS)
    assert int(data.test.sum()) == 1_038_896  # PROVENANCE.md's count of ones
