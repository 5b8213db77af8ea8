"""Feature quality: sparsity statistics, the linear probe, and the regularized autoencoders from the command line
(train, eval, probe, figures) on the embedded digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vaelab
from cli_helpers import fails_with, run_cli
from vaelab.core.errors import VaelabError
from vaelab.data import Dataset
from vaelab.eval.features import (
    C_GRID,
    fit_probe,
    linear_probe,
    probe_data,
    select_C,
    sparsity_statistics,
    treves_rolls,
)


@pytest.fixture(scope="module")
def dae_run(tmp_path_factory):
    """A DAE on grey-level digits: 20 epochs (about two seconds) is enough for it to denoise."""
    out = tmp_path_factory.mktemp("runs") / "dae"
    options = {"epochs": 20, "latent_dim": 64, "binarize": "none", "lr": 3e-3, "noise": 0.25, "seed": 0}
    return vaelab.train("dae", "digits", out, **options)


# --- sparsity statistics -------------------------------------------------------------------------------------------


def test_sparsity_statistics_by_hand():
    one_hot = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]])
    s = sparsity_statistics(one_hot)
    assert s["mean_activation"] == pytest.approx(3 / 12)
    assert s["active_fraction"] == pytest.approx(2 / 12)
    assert s["dead_units"] == 2
    assert s["lifetime_sparsity"] == pytest.approx(1.0)  # each live unit fires on one example of three
    assert s["population_sparsity"] == pytest.approx(1.0)  # each non-empty code has one unit on
    dense = sparsity_statistics(torch.full((5, 3), -0.5))
    assert dense["active_fraction"] == 1 and dense["dead_units"] == 0
    assert dense["lifetime_sparsity"] == pytest.approx(0) and dense["population_sparsity"] == pytest.approx(0)
    # a unit on for half of four examples: a = (1/2)^2 / (1/2) = 1/2, sparseness (1 - 1/2) / (1 - 1/4) = 2/3
    assert float(treves_rolls(torch.tensor([1.0, 1.0, 0.0, 0.0]), 0)) == pytest.approx(2 / 3)
    assert sparsity_statistics(torch.full((4, 2), 0.05))["active_fraction"] == 0  # below the 0.1 threshold


# --- the linear probe ----------------------------------------------------------------------------------------------


def test_C_is_chosen_on_the_validation_split():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1500)
    x = np.concatenate([rng.normal(size=(1500, 2)) + 1.2 * np.eye(3, 2)[y], rng.normal(size=(1500, 40))], axis=1)
    split = {"train": (x[:100], y[:100]), "val": (x[100:700], y[100:700]), "test": (x[700:], y[700:])}
    fit = fit_probe(split, None, 1000)
    errors = fit["val_errors"]
    assert sorted(errors) == sorted(C_GRID)
    for C, error in errors.items():  # each is the error on val of a probe fit on train alone
        assert error == linear_probe(*split["train"], *split["val"], C)["error"]
    best = min(e for e in errors.values())
    assert fit["C"] == min(C for C, e in errors.items() if e == best)  # the strongest regularization among ties
    everything = (np.concatenate([x[:100], x[100:700]]), np.concatenate([y[:100], y[100:700]]))
    assert fit["error"] == linear_probe(*everything, *split["test"], fit["C"])["error"]  # refit on train + val
    scrambled = {**split, "test": (x[700:], rng.permutation(y[700:]))}
    assert fit_probe(scrambled, None, 1000)["C"] == fit["C"]  # the test set plays no part in the choice
    blobs = 10 * np.eye(3)[y]  # every C separates them: a tie, won by the strongest regularization
    assert select_C((blobs[:100], y[:100]), (blobs[100:700], y[100:700]), 1000)[0] == 0.001
    assert fit_probe(split, 0.5, 1000)["C"] == 0.5 and fit_probe(split, 0.5, 1000)["val_errors"] == {}
    with pytest.raises(VaelabError, match="needs a validation split"):
        fit_probe({**split, "val": (x[:0], y[:0])}, None, 1000)


def test_linear_probe_separates_what_is_separable_and_nothing_else():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(size=(600, 5)) + 10 * np.eye(3, 5)[y]  # three blobs 14 sigma apart
    result = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert result["error"] == 0 and result["converged"]
    noise = rng.normal(size=(600, 5))  # labels independent of the features: chance is 2/3 error
    assert linear_probe(noise[:400], y[:400], noise[400:], y[400:])["error"] > 0.5
    with pytest.raises(VaelabError, match=r"C \(the inverse regularization strength of the probe\) must be > 0"):
        linear_probe(x, y, x, y, C=0)
    with pytest.raises(VaelabError, match="max_iter must be >= 1"):
        linear_probe(x, y, x, y, max_iter=0)


def test_probe_data_binarizes_the_training_split_like_the_others():
    data = vaelab.load_dataset(vaelab.DataConfig("digits"), seed=0, binary_model=True)
    assert data.dynamic
    splits = probe_data(data)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [1350, 150, 297]
    for x, y in splits.values():
        assert set(x.unique().tolist()) == {0.0, 1.0} and len(x) == len(y)
    assert torch.equal(probe_data(data)["train"][0], splits["train"][0])  # a fixed binarization
    sub = probe_data(data, max_train=100)
    assert len(sub["train"][0]) == len(sub["train"][1]) == 100 and len(sub["val"][0]) == 150
    with pytest.raises(VaelabError, match="max_train must be >= 1"):
        probe_data(data, max_train=0)
    unlabeled = Dataset("blank", (1, 2, 2), *[torch.zeros(4, 1, 2, 2)] * 3, None, None, None, dynamic=False)
    with pytest.raises(VaelabError, match="has no class labels"):
        probe_data(unlabeled)


# --- the models from the command line ------------------------------------------------------------------------------


def test_dae_run_eval_probe_and_figures(capsys, dae_run):
    figures = {p.name for p in (dae_run.path / "figures").iterdir()}
    assert {"encoder_filters.png", "decoder_filters.png", "code_histogram.png", "denoising.png"} <= figures
    code, out, err = run_cli(capsys, "eval", str(dae_run.path), "--device", "cpu")
    assert code == 0, err
    result = json.loads((dae_run.path / "eval.json").read_text())
    for key in ("reconstruction", "mse", "mean_activation", "active_fraction", "lifetime_sparsity", "dead_units"):
        assert key in result, key
    assert result["mse_denoised"] < result["mse_corrupted"]  # it learned to denoise
    gain = 10 * math.log10(result["mse_corrupted"] / result["mse_denoised"])
    assert result["denoising_gain_db"] == pytest.approx(gain) and gain > 0.5
    assert result["mse"] < result["mse_denoised"]  # clean inputs reconstruct better than corrupted ones
    assert "denoising_gain_db" in out

    code, out, err = run_cli(capsys, "probe", str(dae_run.path), "--device", "cpu")
    assert code == 0, err
    probe = json.loads((dae_run.path / "probe.json").read_text())
    assert probe["num_train"] == 1500 and probe["num_test"] == 297 and probe["code_dim"] == 64
    assert probe["code_C"] in C_GRID and probe["pixel_C"] in C_GRID and len(probe["code_val_errors"]) == 4
    assert probe["pixel_dim"] == 64 and probe["pixel_error"] < 0.1  # grey-level 8x8 digits are nearly linear
    assert probe["code_error"] < 0.2
    assert "codes" in out and "raw pixels" in out


def test_each_model_trains_and_reports_its_numbers(tmp_path):
    common = {"epochs": 2, "latent_dim": 32, "binarize": "none", "seed": 0}
    ks = vaelab.evaluate(vaelab.train("ksparse-ae", "digits", tmp_path / "ks", k=4, alpha=2, **common), device="cpu")
    assert ks["active_fraction"] <= 8 / 32  # the features keep alpha * k units
    cae_run = vaelab.train("cae", "digits", tmp_path / "cae", contraction=0.5, tied=True, **common)
    assert vaelab.load(cae_run.path).model.decoder.tied is not None  # tied weights save and load
    cae = vaelab.evaluate(cae_run, device="cpu")
    assert cae["contraction"] > 0 and cae["loss"] == pytest.approx(cae["reconstruction"] + 0.5 * cae["contraction"])
    sp = vaelab.evaluate(vaelab.train("sparse-ae", "digits", tmp_path / "sp", **common), device="cpu")
    assert sp["sparsity"] > 0 and 0 < sp["mean_activation"] < 1


def test_probe_of_a_vae_uses_the_posterior_mean(capsys, vae_run, tmp_path):
    from vaelab.eval.features import probe

    result = probe(vae_run, max_train=500, baseline=False)
    assert result["code_dim"] == 4 and result["num_train"] == 500 + 150 and "pixel_error" not in result
    assert result["code_error"] < 0.6  # 4 latent dimensions of a small VAE: well above chance, well below 90%
    report = vae_run.path / "probe-n500-nobaseline.json"  # keyed by the settings that differ from the defaults
    assert report.exists()
    assert json.loads(report.read_text())["command"] == f"vaelab probe {vae_run.path} --max-train 500 --no-baseline"


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("sparsity_target must be in (0, 1), got 1.5", ["sparse-ae", "--set", "sparsity_target=1.5"]),
        ("sparsity_target must be in (0, 1), got 0.0", ["sparse-ae", "--set", "sparsity_target=0"]),
        ("k must be in [1, latent_dim] = [1, 100], got 500", ["ksparse-ae", "--set", "k=500"]),
        ("k must be in [1, latent_dim] = [1, 100], got 0", ["ksparse-ae", "--set", "k=0"]),
        ("must be >= 0, got -0.1", ["dae", "--set", "corruption=gaussian", "--set", "noise=-0.1"]),
        ("must be in [0, 1], got 1.5", ["dae", "--set", "noise=1.5"]),
        ("needs a differentiable encoder", ["cae", "--set", "hidden=64", "--set", "activation=relu"]),
    ],
)
def test_bad_model_options_from_the_command_line(capsys, tmp_path, message, args):
    fails_with(capsys, message, "train", *args, "--out", str(tmp_path / "r"))


def test_bad_probe_options(capsys, dae_run):
    fails_with(
        capsys,
        "C (the inverse regularization strength of the probe) must be > 0",
        "probe",
        str(dae_run.path),
        "--C",
        "0",
    )
    fails_with(capsys, "max_train must be >= 1", "probe", str(dae_run.path), "--max-train", "0")
    fails_with(capsys, "is not a vaelab run", "probe", str(dae_run.path / "figures"))
