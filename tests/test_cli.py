"""The command line as a user meets it: each bad input is one clear line, never a traceback."""

from __future__ import annotations

import json
import shutil

import torch

from cli_helpers import fails_with, run_cli


def test_lists(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "vae" in out and "ae" in out
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and all(n in out for n in ("digits", "mnist", "fashion-mnist"))


def test_eval_and_sample(capsys, vae_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vae_run.path, run)
    code, out, err = run_cli(capsys, "eval", str(run), "--iw-samples", "100", "--device", "cpu")
    assert code == 0, err
    assert not (run / "eval.json").exists()  # K=100 is not the default K=1000: a report of its own
    result = json.loads((run / "eval-test-k100.json").read_text())
    assert result["command"] == f"vaelab eval {run} --iw-samples 100"
    for key in ("loss", "reconstruction", "kl", "elbo", "iwae", "nll", "mse", "kl_per_dim", "active_units"):
        assert key in result, key
    assert result["iw_samples"] == 100 and result["num_examples"] == 297
    assert result["elbo"] <= result["iwae"] <= 0
    assert len(result["kl_per_dim"]) == 4 and abs(sum(result["kl_per_dim"]) - result["kl"]) < 1e-3
    assert "iwae" in out
    code, out, err = run_cli(capsys, "sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0


def test_unknown_model(capsys):
    err = fails_with(capsys, "unknown model 'nope'; choose from: ae, ", "train", "nope")
    assert "iwae" in err and "vae" in err  # every registered model is listed


def test_unknown_dataset(capsys):
    fails_with(capsys, "unknown data set 'cifar'; choose from: binarized-mnist", "train", "vae", "--data", "cifar")


def test_data_folder_without_the_files(capsys, tmp_path):
    fails_with(
        capsys,
        "train-images-idx3-ubyte.gz",
        "train",
        "vae",
        "--data",
        "mnist",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    )


def test_image_too_small_for_the_conv_backbone(capsys, tmp_path):
    err = fails_with(
        capsys,
        "too small for the conv backbone",
        "train",
        "vae",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "backbone=conv",
        "--set",
        "channels=16,32,64,128",
    )
    assert "backbone=mlp" in err


def test_unknown_config_key(capsys, tmp_path):
    err = fails_with(capsys, "unknown config key 'bta'", "train", "vae", "--set", "bta=4")
    assert "beta" in err  # the valid keys are listed


def test_wrong_value_type(capsys):
    fails_with(capsys, "beta expects a number, got 'four'", "train", "vae", "--set", "beta=four")
    fails_with(capsys, "expects an integer", "train", "vae", "--set", "hidden=12.5")
    fails_with(capsys, "unknown activation 'swish'; choose from:", "train", "vae", "--set", "activation=swish")
    fails_with(capsys, "--set expects key=value", "train", "vae", "--set", "beta")


def test_not_a_run_folder(capsys, tmp_path):
    fails_with(capsys, "is not a vaelab run: it has no config.json", "eval", str(tmp_path))
    fails_with(capsys, "does not exist", "eval", str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text('{"hello": 1}')
    fails_with(capsys, "is not a vaelab run config", "eval", str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    fails_with(capsys, "is not valid JSON", "eval", str(tmp_path))


def test_truncated_weights(capsys, vae_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vae_run.path, run)
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    fails_with(capsys, "is truncated or corrupt", "eval", str(run))
    weights.unlink()
    fails_with(capsys, "has no trained weights", "sample", str(run))


def test_truncated_or_foreign_checkpoint(capsys, vae_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vae_run.path, run)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    fails_with(capsys, "is truncated or corrupt", "train", "--resume", str(run))
    torch.save({"state_dict": {}}, ckpt)
    fails_with(capsys, "is not a vaelab training checkpoint", "train", "--resume", str(run))


def test_resume_of_a_finished_run(capsys, vae_run):
    fails_with(capsys, "already finished", "train", "--resume", str(vae_run.path))


def test_resume_takes_no_other_options(capsys, vae_run):
    fails_with(capsys, "give no model or options", "train", "--resume", str(vae_run.path), "--lr", "0.1")
    fails_with(capsys, "must be more than that", "train", "--resume", str(vae_run.path), "--epochs", "3")


def test_bad_numbers(capsys, vae_run, tmp_path):
    fails_with(capsys, "--iw-samples must be >= 1", "eval", str(vae_run.path), "--iw-samples", "0")
    fails_with(capsys, "-n must be >= 1", "sample", str(vae_run.path), "-n", "0")
    fails_with(capsys, "epochs must be >= 1", "train", "vae", "--epochs", "0")
    fails_with(
        capsys,
        "batch size 5000 is larger than the training set",
        "train",
        "vae",
        "--batch-size",
        "5000",
        "--out",
        str(tmp_path / "big"),
    )


def test_bernoulli_on_data_outside_unit_interval(capsys, tmp_path, monkeypatch):
    import numpy as np

    from vaelab.data.base import DATASETS, ImageArrays

    def wide(data_dir):
        rng = np.random.default_rng(0)
        return ImageArrays(
            train=rng.normal(size=(300, 1, 8, 8)).astype(np.float32),
            test=rng.normal(size=(50, 1, 8, 8)).astype(np.float32),
        )

    monkeypatch.setitem(DATASETS._entries, "wide", DATASETS._entries["digits"].__class__("wide", wide, "test"))
    fails_with(
        capsys,
        "needs data in [0, 1]",
        "train",
        "vae",
        "--data",
        "wide",
        "--set",
        "binarize=none",
        "--out",
        str(tmp_path / "w"),
    )


def test_sample_of_a_non_generative_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "ae", "--epochs", "1", "--out", str(tmp_path / "ae"))
    assert code == 0, err
    fails_with(capsys, "is not a generative model", "sample", str(tmp_path / "ae"))


def test_presets_are_valid_and_flags_override_them(capsys, tmp_path):
    from vaelab.presets import presets
    from vaelab.runs import make_run_config

    for preset in presets().values():
        make_run_config(preset.model, preset.data, preset.options)  # raises on a stale key or value
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "vae-digits" in out
    code, _, err = run_cli(capsys, "train", "--preset", "vae-digits", "--epochs", "1", "--out", str(tmp_path / "p"))
    assert code == 0, err
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["model_config"]["latent_dim"] == 8
    fails_with(capsys, "unknown preset 'nope'; choose from:", "train", "--preset", "nope")
    fails_with(capsys, "trains 'vae', not 'ae'", "train", "ae", "--preset", "vae-digits")
