"""The VAE features as a user meets them: grad-variance, latents, eval's collapse warning and speed, iwae runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import vaelab
from cli_helpers import run_cli
from vaelab.core.errors import VaelabError
from vaelab.data import DataConfig, load_dataset
from vaelab.eval.evaluate import evaluate_model
from vaelab.models import build_model
from vaelab.runs import load, save_weights
from vaelab.viz.latents import interpolation, latent_scatter, manifold


def test_vae_runs_draw_their_latent_space(vae_run):
    figures = {p.name for p in (vae_run.path / "figures").iterdir()}
    assert {"latent_scatter.png", "interpolation.png"} <= figures
    assert "manifold.png" not in figures  # a 4-D latent has no 2-D grid


def test_latents_command(capsys, vae_run, tmp_path):
    code, _, err = run_cli(capsys, "latents", str(vae_run.path), "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interpolation.png", "latent_scatter.png"]
    assert all(p.stat().st_size > 1000 for p in tmp_path.iterdir())


def test_latent_figures_on_a_2d_latent(tmp_path):
    torch.manual_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(16,)).eval()
    x = torch.rand(40, 1, 8, 8)
    assert manifold(tmp_path / "m.png", model, n=5).stat().st_size > 1000
    assert latent_scatter(tmp_path / "s.png", model, x, torch.arange(40) % 10).stat().st_size > 1000
    assert interpolation(tmp_path / "i.png", model, x[:2], x[2:4], steps=4).stat().st_size > 1000
    wide = build_model("vae", (1, 8, 8), latent_dim=5, hidden=(16,)).eval()
    latent_scatter(tmp_path / "pca.png", wide, x)  # PCA to 2-D, no labels
    with pytest.raises(VaelabError, match="2-D latent"):
        manifold(tmp_path / "no.png", wide)


def test_grad_variance_command(capsys, vae_run):
    code, out, err = run_cli(capsys, "grad-variance", str(vae_run.path), "--repeats", "20", "--batch-size", "20")
    assert code == 0, err
    assert "ratio = score / reparam" in out and "encoder.net.0.weight" in out and "total" in out
    assert "unbiasedness: mean squared z-score" in out
    total = next(line for line in out.splitlines() if "total" in line)
    ratio = float(total.split("│")[-2])
    assert ratio > 10  # the score function's variance, as a number


def test_grad_variance_bad_input(capsys, vae_run):
    code, _, err = run_cli(capsys, "grad-variance", str(vae_run.path), "--repeats", "1")
    assert code == 2 and "repeats must be >= 2" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "grad-variance", str(vae_run.path), "--mc-samples", "0")
    assert code == 2 and "--mc-samples must be >= 1" in err


def test_eval_reports_speed_and_warns_on_collapse(capsys, vae_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(vae_run.path, run_dir)
    code, out, err = run_cli(capsys, "eval", str(run_dir), "--iw-samples", "50", "--device", "cpu")
    assert code == 0, err
    result = json.loads((run_dir / "eval-test-k50.json").read_text())
    assert result["iwae_samples_per_s"] > 0 and "samples/s (K=50)" in out
    assert result["posterior_collapsed"] is False and "posterior collapse" not in out

    # an encoder that ignores x: q(z|x) is the same for every x, no unit is active
    run = load(run_dir)
    with torch.no_grad():
        run.model.encoder.net[-1].weight.zero_()
    save_weights(run_dir, run.model)
    code, out, err = run_cli(capsys, "eval", str(run_dir), "--iw-samples", "10", "--device", "cpu")
    assert code == 0, err
    result = json.loads((run_dir / "eval-test-k10.json").read_text())
    assert result["active_units"] == 0 and result["posterior_collapsed"] is True
    assert "posterior collapse: only 0 of 4 latent units are active" in " ".join(out.split())


def test_iwae_and_two_layer_runs_end_to_end(capsys, tmp_path):
    for name, extra in (("iwae", ["--set", "mc_samples=3"]), ("vae", ["--set", "inner_latent_dim=4"])):
        out_dir = tmp_path / name
        args = [
            "train",
            name,
            "--epochs",
            "1",
            "--latent-dim",
            "2",
            "--set",
            "hidden=32",
            *extra,
            "--out",
            str(out_dir),
        ]
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err
        code, _, err = run_cli(capsys, "eval", str(out_dir), "--iw-samples", "20", "--device", "cpu")
        assert code == 0, err
        result = json.loads((out_dir / "eval-test-k20.json").read_text())
        assert result["elbo"] <= result["iwae"] + 0.5 and result["nll"] > 0
    assert json.loads((tmp_path / "iwae" / "eval-test-k20.json").read_text())["iwae_k"] < 0  # the training bound, K=3
    assert json.loads((tmp_path / "vae" / "eval-test-k20.json").read_text())["latent_dim"] == 6  # [h, z]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "iwae", "--set", "mc_samples=0"], "mc_samples must be >= 1, got 0"),
        (["train", "vae", "--set", "mc_samples=-2"], "mc_samples must be >= 1, got -2"),
        (["train", "vae", "--set", "posterior=full", "--latent-dim", "1000"], "over the memory budget"),
        (["train", "vae", "--set", "gradient_estimator=reinforce"], "unknown gradient estimator 'reinforce'"),
        (["train", "vae", "--set", "likelihood=gaussian-pixel", "--set", "sigma_min=0"], "sigma_min must be > 0"),
    ],
)
def test_bad_vae_options_on_the_command_line(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "r"))
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err


def test_continuous_bernoulli_refuses_data_outside_unit_interval(capsys, tmp_path, monkeypatch):
    import numpy as np

    from vaelab.data.base import DATASETS, ImageArrays

    def wide(data_dir):
        rng = np.random.default_rng(0)
        return ImageArrays(rng.normal(size=(300, 1, 8, 8)).astype(np.float32), rng.random((50, 1, 8, 8)))

    monkeypatch.setitem(DATASETS._entries, "wide", DATASETS._entries["digits"].__class__("wide", wide, "test"))
    args = ["train", "vae", "--data", "wide", "--set", "likelihood=continuous-bernoulli", "--out", str(tmp_path / "w")]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "continuous-bernoulli likelihood needs data in [0, 1]" in err


def test_continuous_bernoulli_trains_on_grey_levels(tmp_path):
    run = vaelab.train("vae", "digits", tmp_path / "cb", epochs=1, latent_dim=2, likelihood="continuous-bernoulli")
    data = run.dataset()
    assert not data.dynamic and 0 < float(data.train.mean()) < 1 and len(torch.unique(data.train)) > 2  # grey
    result = evaluate_model(run.model, data, iw_samples=5)
    assert result["elbo"] < result["iwae"] + 1.0


def test_eval_json_of_an_ae_has_no_collapse_flag():
    torch.manual_seed(0)
    data = load_dataset(DataConfig(name="digits", val_fraction=0.0), 0)
    model = build_model("ae", data.shape, latent_dim=2, hidden=(8,))
    assert "posterior_collapsed" not in evaluate_model(model, data)
