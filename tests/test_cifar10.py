"""CIFAR-10 read from stand-in batch files in the official format (never real data); VQ bad input via the CLI."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from cli_helpers import fails_with
from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, load_dataset
from vaelab.data import cifar10 as c10
from vaelab.data.download import md5


def _write_batches(folder, n: int = 6) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate(c10.FILES):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {b"batch_label": b"stand-in", b"labels": [int(v) for v in (np.arange(n) + i) % 10], b"data": data}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = data
    return written


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    written = _write_batches(tmp_path / "cifar-10-batches-py")
    monkeypatch.setattr(c10, "MD5S", {name: md5(tmp_path / "cifar-10-batches-py" / name) for name in c10.FILES})
    return tmp_path, written


def test_reads_the_python_batches(stand_in):
    root, written = stand_in
    arrays = c10.load_cifar10(root)
    assert arrays.train.shape == (30, 3, 32, 32) and arrays.test.shape == (6, 3, 32, 32)
    assert arrays.train.dtype == np.float32 and 0 <= arrays.train.min() and arrays.train.max() <= 1
    first = written["data_batch_1"][0].reshape(3, 32, 32) / 255.0  # R, G, B planes of 32x32, row-major
    np.testing.assert_allclose(arrays.train[0], first, rtol=1e-6)
    assert arrays.train_labels.tolist()[:7] == [0, 1, 2, 3, 4, 5, 1]
    data = load_dataset(DataConfig("cifar10", data_dir=str(root), val_fraction=0.2), 0)
    assert data.shape == (3, 32, 32) and len(data.train) == 24 and len(data.val) == 6


def test_reads_the_archive_from_a_folder_into_the_cache(stand_in, tmp_path, monkeypatch):
    root, _ = stand_in
    folder = tmp_path / "archive"
    folder.mkdir()
    with tarfile.open(folder / c10.ARCHIVE, "w:gz") as tar:
        tar.add(root / c10.FOLDER, arcname=c10.FOLDER)
    monkeypatch.setattr(c10, "ARCHIVE_MD5", md5(folder / c10.ARCHIVE))
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    arrays = c10.load_cifar10(folder)
    assert arrays.test.shape == (6, 3, 32, 32)
    assert (tmp_path / "cache" / "cifar10" / c10.FOLDER / "test_batch").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [c10.ARCHIVE]  # the data folder is left as it was


def test_bad_files_are_clear_errors(stand_in, tmp_path, monkeypatch):
    root, _ = stand_in
    with pytest.raises(VaelabError, match=r"cifar10 not found.*data_batch_1"):
        c10.load_cifar10(tmp_path / "elsewhere")
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VaelabError, match="wrong md5"):
        c10.load_cifar10(root)
    monkeypatch.setitem(c10.MD5S, "test_batch", md5(path))
    with pytest.raises(VaelabError, match="not a CIFAR-10 python batch"):
        c10.load_cifar10(root)


def test_a_pickle_that_would_run_code_is_refused(stand_in, monkeypatch):
    root, _ = stand_in
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(print))  # any callable beyond numpy's array types
    monkeypatch.setitem(c10.MD5S, "test_batch", md5(path))
    with pytest.raises(VaelabError, match="not part of a CIFAR-10 batch"):
        c10.load_cifar10(root)


def test_vq_bad_input_through_the_cli(capsys, tmp_path):
    out = str(tmp_path / "r")
    fails_with(capsys, "codebook_size must be >= 2", "train", "vqvae", "--out", out, "--set", "codebook_size=1")
    err = fails_with(
        capsys, "a 8x8 image cannot be halved 4 times", "train", "vqvae", "--out", out, "--set", "downsample=4"
    )
    assert "use at most 3 steps" in err
