"""Your own data: image folders, .npy/.npz arrays, .csv tables, tensors and torch Datasets; the compact device
storage and the streaming path (same batches, resume, DDP); celeba64 on stand-in files; bad input, one line each."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaelab
from cli_helpers import fails_with, run_cli
from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, describe_data, load_dataset
from vaelab.data.celeba import load_celeba64
from vaelab.data.dataset import binarize
from vaelab.data.download import CACHE_ENV
from vaelab.data.sources.table import in_table_units
from vaelab.data.storage import DeviceSplit, decode, encode, scan
from vaelab.runs import load

TINY = dict(epochs=1, latent_dim=2, hidden=(16,), batch_size=10, log_every=5)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def grey(n: int, size: tuple[int, int] = (8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size[1], size[0]), dtype=np.uint8)


def png_folder(root: Path, n: int = 40, classes: tuple[str, ...] = ()) -> Path:
    images = grey(n)
    for i, img in enumerate(images):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def dataset(data, seed: int = 0, binary: bool = False, **options) -> vaelab.data.Dataset:
    return load_dataset(DataConfig(**{**describe_data(data, seed, options), **options}), seed, binary_model=binary)


def write_csv(path: Path, rows: np.ndarray, header: tuple[str, ...] = ("a", "b", "c")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows.tolist())
    return path


# -- the sources and their split rules ---------------------------------------------------------------------------


def test_flat_folder_carves_the_test_split_by_seed(tmp_path):
    folder = png_folder(tmp_path / "imgs", 40)
    a, b, c = dataset(folder, 0), dataset(folder, 0), dataset(folder, 1)
    assert a.shape == (1, 8, 8) and a.train_labels is None
    assert (a.size("train"), a.size("val"), a.size("test")) == (32, 4, 4)  # test 10 %, val 10 % of the rest
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, c.test)
    every = {bytes(x) for x in (grey(40).astype(np.float32) / 255)}
    held = torch.cat([a.train, a.val, a.test]).numpy()
    assert {bytes(x[0]) for x in held} == every  # each image once, its values k/255 exactly


def test_class_folders_give_labels_and_train_test_folders_the_splits(tmp_path):
    folder = png_folder(tmp_path / "imgs", 30, classes=("cat", "ant", "bee"))
    data = dataset(folder, val_fraction=0.0)
    images = grey(30).astype(np.float32) / 255
    names = sorted(("cat", "ant", "bee"))
    for x, y in zip(torch.cat([data.train, data.test]), torch.cat([data.train_labels, data.test_labels])):
        i = next(k for k in range(30) if np.array_equal(images[k], x[0].numpy()))
        assert names[int(y)] == ("cat", "ant", "bee")[i % 3]  # sorted class names, as ImageFolder
    split = tmp_path / "split"
    png_folder(split / "train", 12, classes=("a", "b"))
    png_folder(split / "test", 4, classes=("a", "b"))
    data = dataset(split, val_fraction=0.25)
    assert (data.size("train"), data.size("val"), data.size("test")) == (9, 3, 4)
    assert sorted(data.test_labels.tolist()) == [0, 0, 1, 1]


def test_image_size_and_channels(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(10, 14), (20, 12), (16, 16)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = dataset(folder, image_size=8, channels=1, test_fraction=0.34, val_fraction=0.0)
    assert data.shape == (1, 8, 8)
    # the independent route: resize the shorter side to 8 with Pillow, then cut the centre
    img = Image.open(folder / "1.png").convert("L").resize((13, 8), Image.BILINEAR, reducing_gap=None)
    expected = np.asarray(img)[:, 2:10].astype(np.float32) / 255
    held = torch.cat([data.train, data.test])[:, 0].numpy()
    assert any(np.array_equal(expected, x) for x in held)
    assert dataset(folder, image_size=8, test_fraction=0.34).shape == (3, 8, 8)


def test_arrays_of_every_layout_read_alike(tmp_path):
    x = grey(20)
    np.save(tmp_path / "nhw.npy", x)
    np.save(tmp_path / "nchw.npy", x[:, None])
    np.save(tmp_path / "nhwc.npy", x[..., None])
    np.save(tmp_path / "float.npy", x.astype(np.float32) / 255)
    sets = [dataset(tmp_path / f"{n}.npy") for n in ("nhw", "nchw", "nhwc", "float")]
    assert all(d.name == "image-array" and d.shape == (1, 8, 8) for d in sets)
    assert all(torch.equal(sets[0].train, d.train) and torch.equal(sets[0].test, d.test) for d in sets)
    assert sets[0].splits["train"].encoding == sets[3].splits["train"].encoding == "uint8"
    colour = np.random.default_rng(1).random((10, 4, 5, 3), dtype=np.float32)
    np.savez(tmp_path / "c.npz", x=colour, labels=np.arange(10))
    data = dataset(tmp_path / "c.npz", val_fraction=0.0)
    assert data.shape == (3, 4, 5) and data.splits["train"].encoding == "float32"
    got = {int(y): x for x, y in zip(data.train, data.train_labels)}
    assert all(np.array_equal(colour[k].transpose(2, 0, 1), v.numpy()) for k, v in got.items())
    np.save(tmp_path / "v.npy", np.random.default_rng(2).normal(size=(30, 5)))
    vec = dataset(tmp_path / "v.npy")
    assert vec.name == "vector-array" and vec.kind == "vectors" and vec.shape == (5,)


def test_table_is_standardized_and_samples_come_back_in_its_units(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]
    path = write_csv(tmp_path / "t.csv", rows)
    section = describe_data(path, 0, {})
    assert section["columns"] == ("a", "b", "c")
    train = load_dataset(DataConfig(**section, val_fraction=0.0), 0).train.numpy()
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-4)
    # the stored statistics undo it: back in the table's units, the training rows are rows of the file
    back = train * np.array(section["scale"]) + np.array(section["shift"])
    assert all(np.isclose(rows, r, atol=1e-4).all(1).any() for r in back[:5])
    run = vaelab.train("vae", path, tmp_path / "run", **{**TINY, "epochs": 3})
    assert run.config.model_config.likelihood == "gaussian"  # the table's default
    monkeypatch.chdir(tmp_path / "run" / "figures")
    code, _, err = run_cli(capsys, "sample", str(tmp_path / "run"), "-n", "500", "--out", str(tmp_path / "s.png"))
    assert code == 0, err
    with open(tmp_path / "s.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["a", "b", "c"] and len(table) == 501
    samples = np.array(table[1:], dtype=float)
    assert abs(samples[:, 1].mean() - 50) < 5 and abs(samples[:, 2].mean() + 3) < 0.1  # original units


def test_tensors_arrays_and_torch_datasets(tmp_path):
    x = torch.from_numpy(grey(30)).unsqueeze(1)
    by_tensor, by_array = describe_data(x, 0, {}), describe_data(x.numpy(), 0, {})
    assert by_tensor["path"] == by_array["path"] and Path(by_tensor["path"]).is_file()  # cached once, by contents

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return x[i].float() / 255, i % 3

    data = dataset(Pairs(), val_fraction=0.0)
    assert data.shape == (1, 8, 8) and data.splits["train"].encoding == "uint8"  # ToTensor-like floats: k/255
    assert sorted(torch.cat([data.train_labels, data.test_labels]).tolist()) == sorted(i % 3 for i in range(30))
    assert dataset(x).test.shape == data.test.shape


# -- compact storage ---------------------------------------------------------------------------------------------


def test_uint8_and_bits_decode_exactly():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, (50, 1, 5, 7), dtype=np.uint8)
    floats = u.astype(np.float32) / 255  # what the float32 path held
    for source in (u, floats):
        found = scan(source)
        split = DeviceSplit.build(source, found, "cpu")
        assert found.encoding == "uint8" and split.nbytes == floats.nbytes // 4
        assert np.array_equal(split.all().numpy(), floats)  # bit for bit
    b = rng.random((20, 1, 3, 5)) < 0.5
    split = DeviceSplit.build(b.astype(np.float32), scan(b.astype(np.float32)), "cpu")
    assert split.encoding == "bits" and split.nbytes == 20 * 2  # 15 pixels in 2 bytes
    assert np.array_equal(split.all().numpy(), b.astype(np.float32))
    assert torch.equal(decode(torch.from_numpy(encode(b, "bits")), "bits", (1, 3, 5)), torch.from_numpy(b).float())
    assert scan(np.array([[0.5, 0.25]], dtype=np.float32)).encoding == "float32"  # not k/255 nor 0/1


def test_rows_drawn_when_read_show_their_progress_when_they_span_more_than_one_block(tmp_path, monkeypatch):
    """A lazy split (rendered sprites, decoded image files) over more than one block of CHUNK_BYTES shows its
    progress on the terminal and in the log; a small or already-held one stays quiet."""
    from vaelab.data import base

    class Stripes(base.LazyArray):
        dtype = np.dtype(np.bool_)

        def __init__(self, n: int) -> None:
            self.shape = (n, 1, 4, 4)

        def rows(self, indices: np.ndarray) -> np.ndarray:
            return (np.asarray(indices)[:, None, None, None] + np.arange(16).reshape(1, 1, 4, 4)) % 3 == 0

    monkeypatch.setattr(base, "CHUNK_BYTES", 16 * 100)  # blocks of 100 rows
    log = tmp_path / "train.log"
    lazy = Stripes(250)
    split = DeviceSplit.build(lazy, scan(lazy), "cpu", "sprites, train split", log)
    assert np.array_equal(split.all().numpy(), lazy[np.arange(250)].astype(np.float32))
    assert "reading sprites, train split: 250/250 examples (100%)" in log.read_text()
    log.unlink()
    DeviceSplit.build(Stripes(100), scan(Stripes(100)), "cpu", "one block", log)  # one block: quiet
    DeviceSplit.build(lazy[np.arange(250)], scan(lazy[np.arange(250)]), "cpu", "held", log)  # not lazy: quiet
    DeviceSplit.build(lazy, scan(lazy), "cpu", "another rank", log, show=False)
    assert not log.exists()


def test_builtin_data_goes_through_the_same_path():
    data = load_dataset(DataConfig("digits"), 0, binary_model=True)
    assert data.splits["train"].encoding == "float32"  # k/16 grey levels are no k/255
    assert data.splits["test"].encoding == "bits"  # binarized once, held as bits
    assert "held on cpu" in data.note


# -- the streaming path ------------------------------------------------------------------------------------------


def test_streaming_draws_the_same_batches(tmp_path):
    folder = png_folder(tmp_path / "imgs", 60)
    held = dataset(folder, binary=True)
    streamed = dataset(folder, binary=True, memory_budget=1e-9, workers=2)
    assert streamed.streamed and not held.streamed and "streamed" in streamed.note
    for rank in (0, 1):
        torch.manual_seed(5)
        a = list(held.train_batches(8, torch.Generator().manual_seed(3), rank, 2, skip=1))
        torch.manual_seed(5)
        b = list(streamed.train_batches(8, torch.Generator().manual_seed(3), rank, 2, skip=1))
        assert len(a) == len(b) == 2 and all(torch.equal(p, q) for p, q in zip(a, b))  # dynamic binarization too
    assert torch.equal(held.test, streamed.test)


def weights(run) -> dict[str, torch.Tensor]:
    return run.model.state_dict()


def test_streamed_training_matches_and_resumes_exactly(tmp_path):
    folder = png_folder(tmp_path / "imgs", 80)
    options = {**TINY, "epochs": 2, "checkpoint_every": 2}
    held = vaelab.train("vae", folder, tmp_path / "held", **options)
    streamed = vaelab.train("vae", folder, tmp_path / "stream", memory_budget=1e-9, workers=1, **options)
    half = vaelab.train("vae", folder, tmp_path / "half", memory_budget=1e-9, workers=1, **{**options, "epochs": 1})
    resumed = vaelab.resume(half.path, epochs=2)
    for run in (streamed, resumed):
        assert all(torch.equal(weights(held)[k], v) for k, v in weights(run).items())


@pytest.mark.slow  # two 2-process runs: about a minute on a shared 2-core machine
def test_streamed_ddp_matches_the_held_ddp_run(tmp_path):
    folder = png_folder(tmp_path / "imgs", 80)
    options = {**TINY, "batch_size": 5, "devices": 2, "device": "cpu"}
    held = vaelab.train("vae", folder, tmp_path / "held", **options)
    streamed = vaelab.train("vae", folder, tmp_path / "stream", memory_budget=1e-9, workers=0, **options)
    assert all(torch.equal(weights(held)[k], v) for k, v in weights(streamed).items())


# -- the CLI from another working directory ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pngs", "npy", "csv"])
def test_cli_trains_then_eval_sample_latents_elsewhere(kind, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if kind == "pngs":
        png_folder(work / "pngs", 80, classes=("a", "b"))
        data = "pngs"
    elif kind == "npy":
        np.save(work / "x.npy", grey(80))
        data = "x.npy"
    else:
        write_csv(work / "t.csv", np.random.default_rng(0).normal(size=(80, 3)))
        data = "t.csv"
    code, _, err = run_cli(
        capsys,
        "train",
        "vae",
        "--data",
        data,
        "--out",
        "run",
        "--epochs",
        "1",
        "--latent-dim",
        "2",
        "--batch-size",
        "10",
        "--set",
        "hidden=16",
    )
    assert code == 0, err
    config = json.loads((work / "run" / "config.json").read_text())["data"]
    assert Path(config["path"]).is_absolute() and config["fingerprint"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = str(work / "run")
    for args in (("eval", run, "--iw-samples", "5", "--device", "cpu"), ("sample", run, "-n", "4"), ("latents", run)):
        code, _, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
    assert (work / "run" / "eval-test-k5.json").is_file()
    assert (work / "run" / "figures" / ("samples.csv" if kind == "csv" else "samples.png")).is_file()


def test_a_changed_file_is_detected(tmp_path):
    np.save(tmp_path / "x.npy", grey(80))
    run = vaelab.train("vae", tmp_path / "x.npy", tmp_path / "run", **TINY)
    np.save(tmp_path / "x.npy", grey(80, seed=1))
    with pytest.raises(VaelabError, match="changed since the run was made"):
        load(run.path).dataset()


# -- celeba64 ------------------------------------------------------------------------------------------------------


def test_celeba64_from_the_folder_and_from_the_zip(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / name, quality=95)
    (folder.parent / "list_eval_partition.txt").write_text(
        "".join(f"{n} {s}\n" for n, s in zip(names, (0, 0, 0, 1, 2, 2)))
    )
    a = load_celeba64(tmp_path / "data")
    assert (len(a.train), len(a.val), len(a.test)) == (3, 1, 2) and a.train.shape[1:] == (3, 64, 64)
    with Image.open(folder / names[4]) as img:  # the independent route: crop 148 at the centre, resize to 64
        left, top = (178 - 148) // 2, (218 - 148) // 2
        ref = np.asarray(
            img.convert("RGB")
            .crop((left, top, left + 148, top + 148))
            .resize((64, 64), Image.BILINEAR, reducing_gap=None)
        )
    assert np.array_equal(a.test[0], ref.transpose(2, 0, 1))
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / "img_align_celeba.zip", "w") as z:
        for name in names:
            z.write(folder / name, f"img_align_celeba/{name}")
    (zipped / "list_eval_partition.txt").write_text((folder.parent / "list_eval_partition.txt").read_text())
    b = load_celeba64(zipped)
    assert all(np.array_equal(getattr(a, s)[:], getattr(b, s)[:]) for s in ("train", "val", "test"))
    data = load_dataset(DataConfig("celeba64", data_dir=str(zipped)), 0)
    assert data.size("val") == 1 and data.splits["train"].encoding == "uint8"


# -- bad input: one line each, nothing left behind ---------------------------------------------------------------


def test_bad_images(tmp_path, capsys):
    folder = png_folder(tmp_path / "imgs", 6)
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    fails_with(
        capsys,
        "bad.png: cannot read it as an image",
        "train",
        "vae",
        "--data",
        str(folder),
        "--out",
        str(tmp_path / "run"),
    )
    assert not (tmp_path / "run").exists()
    mixed = png_folder(tmp_path / "mixed", 4)
    Image.fromarray(grey(1, (9, 8))[0]).save(mixed / "wide.png")
    err = fails_with(capsys, "different sizes", "train", "vae", "--data", str(mixed), "--out", str(tmp_path / "run"))
    assert "image_size" in err and not (tmp_path / "run").exists()
    (tmp_path / "empty").mkdir()
    fails_with(capsys, "holds no images", "train", "vae", "--data", str(tmp_path / "empty"))
    fails_with(capsys, "no such file or folder", "train", "vae", "--data", str(tmp_path / "nothing.npy"))


def test_bad_arrays(tmp_path, capsys):
    x = np.random.default_rng(0).random((20, 6), dtype=np.float32)
    x[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    fails_with(
        capsys, "NaN or infinite", "train", "vae", "--data", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "run")
    )
    assert not (tmp_path / "run").exists()
    np.save(tmp_path / "shape.npy", np.zeros((4, 5, 6, 7), dtype=np.uint8))
    fails_with(capsys, "cannot read as data", "train", "vae", "--data", str(tmp_path / "shape.npy"))
    np.save(tmp_path / "big.npy", np.random.default_rng(0).random((20, 1, 4, 4)).astype(np.float32) * 255)
    err = fails_with(
        capsys,
        "needs data in [0, 1]",
        "train",
        "vae",
        "--data",
        str(tmp_path / "big.npy"),
        "--out",
        str(tmp_path / "run"),
    )
    assert "likelihood=gaussian" in err and not (tmp_path / "run").exists()


def test_bad_tables(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("height,colour,weight\n1.0,red,3\n2.0,blue,4\n3.0,red,5\n")
    fails_with(capsys, "column 'colour' is not numeric", "train", "vae", "--data", str(path))
    path.write_text("a,b\n1,2\n3,nan\n4,5\n")
    fails_with(capsys, "column 'b' holds NaN", "train", "vae", "--data", str(path))


def test_table_units_follow_the_change_of_variables():
    """In the table's units a density loses sum_j log scale_j per row: against torch.distributions' affine route."""
    shift, scale = (1.0, -2.0, 30.0), (0.5, 3.0, 20.0)
    z = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    x = torch.distributions.TransformedDistribution(
        z, torch.distributions.AffineTransform(torch.tensor(shift), torch.tensor(scale))
    )
    point = torch.tensor([0.3, -1.0, 2.0])
    log_pz = float(z.log_prob(point).sum())
    log_px = float(x.log_prob(point * torch.tensor(scale) + torch.tensor(shift)).sum())
    config = DataConfig("table", shift=shift, scale=scale)
    got = in_table_units(config, {"elbo": log_pz, "iwae": log_pz, "nll": -log_pz})
    assert got["elbo_table_units"] == pytest.approx(log_px, abs=1e-5)
    assert got["nll_table_units"] == pytest.approx(-log_px, abs=1e-5)


def test_dynamic_binarization_draws_bernoulli_pixels():
    """[u < p], u ~ U[0, 1): zeros and ones only, p = 0 and p = 1 kept exactly, and the mean of many draws is p
    (within 4 standard errors), as torch.bernoulli's would be."""
    torch.manual_seed(0)
    p = torch.tensor([0.0, 0.01, 0.25, 0.5, 0.9, 1.0]).expand(200_000, -1)
    draws = binarize(p)
    assert draws.dtype == p.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert draws[:, 0].sum() == 0 and draws[:, -1].sum() == len(p)
    mean, se = draws.mean(0), (p[0] * (1 - p[0]) / len(p)).sqrt()
    assert ((mean - p[0]).abs() <= 4 * se + 1e-12).all()
