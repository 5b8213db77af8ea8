"""vaelab gaps: the inference gap split into approximation and amortization, checked where everything is exact
(a linear-Gaussian model) and by the Monte Carlo route every other VAE takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.eval.gaps import inference_gaps, run_gaps
from vaelab.models import build_model
from vaelab.runs import load

VAELAB = [sys.executable, "-m", "vaelab.cli"]
W = torch.tensor([[1.0, 0.9], [0.8, 1.0], [1.0, 1.1], [0.5, 0.7], [0.9, 0.6]], dtype=torch.float64)  # tilted p(z|x)


def linear_vae(family: str, encoder_steps: int = 0):
    """A linear-Gaussian VAE with tilted p(z|x), its encoder trained for a few steps on the exact ELBO, and data."""
    torch.manual_seed(0)
    m = build_model("linear-gaussian", (5,), latent_dim=2, fit="sgvb", posterior=family).double()
    m.set_parameters(W, torch.zeros(5, dtype=torch.float64), torch.tensor(0.2))
    x = (m.sample(20) + 0.45 * torch.randn(20, 5, dtype=torch.float64)).detach()
    optimizer = torch.optim.Adam(m.encoder.parameters(), lr=0.05)
    for _ in range(encoder_steps):
        optimizer.zero_grad()
        (-m.elbo(x, m.encode(x)).mean()).backward()
        optimizer.step()
    return m, x


@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_exact_gaps_of_a_linear_gaussian_vae(family):
    m, x = linear_vae(family)
    r = inference_gaps(m, x, k=50, steps=1000, lr=0.1)
    assert r["log_px_method"] == "exact"
    points = {key: torch.tensor(v["points"], dtype=torch.float64) for key, v in r.items() if isinstance(v, dict)}
    torch.testing.assert_close(points["log_px"], m.log_marginal(x).detach())
    gap = points["inference_gap"]
    torch.testing.assert_close(gap, points["kl_q_posterior"], rtol=1e-9, atol=1e-9)
    parts = points["approximation_gap"] + points["amortization_gap"]
    torch.testing.assert_close(parts, gap, rtol=1e-9, atol=1e-9)
    assert r["elbo"]["mean"] < r["iwae"]["mean"] < r["log_px"]["mean"]
    precision = m.exact_posterior(x[:1]).precision_matrix[0].detach()
    best = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision)) if family == "diagonal" else 0.0
    assert r["approximation_gap"]["mean"] == pytest.approx(best, abs=1e-4)  # the best q of the family, closed form
    assert r["amortization_gap"]["mean"] > 0.1  # an untrained encoder is far from its best


def test_the_monte_carlo_route_agrees_with_the_exact_one():
    """What every other VAE gets (IWAE at a large K for log p(x), Monte Carlo ELBOs) against the exact numbers. With a
    diagonal q of a tilted posterior the IWAE estimate converges slowly (heavy-tailed weights); a full q is used."""
    m, x = linear_vae("full", encoder_steps=100)
    exact = inference_gaps(m, x, k=50, steps=300, lr=0.1)
    mc = inference_gaps(m, x, k=50, large_k=5000, steps=300, lr=0.1, samples=16, use_exact=False)
    assert mc["log_px_method"] == "iwae-5000" and "kl_q_posterior" not in mc
    assert exact["amortization_gap"]["mean"] > 0.05
    for key, tol in (("log_px", 0.01), ("elbo", 0.01), ("approximation_gap", 0.02), ("amortization_gap", 0.02)):
        assert mc[key]["mean"] == pytest.approx(exact[key]["mean"], abs=tol), key


def test_gaps_of_a_vae_run_write_the_report_and_the_figure(vae_run):
    done = subprocess.run(
        [*VAELAB, "gaps", str(vae_run.path), "--points", "20", "--k", "20", "--large-k", "500", "--steps", "100"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((vae_run.path / "gaps-k20-n20-K500-s100.json").read_text())  # keyed by its settings
    assert report["weights_id"] and report["command"].startswith("vaelab gaps")
    for key in ("log_px", "elbo", "iwae", "approximation_gap", "amortization_gap"):
        assert {"mean", "stderr", "points"} <= set(report[key]) and len(report[key]["points"]) == 20
    assert report["log_px_method"] == "iwae-500" and report["split"] == "test"
    assert report["elbo"]["mean"] < report["iwae"]["mean"] < report["log_px"]["mean"] + 0.05
    assert report["approximation_gap"]["mean"] > 0 and report["amortization_gap"]["mean"] > -0.05
    assert (vae_run.path / "figures" / "gaps.png").is_file() and "approximation_gap" in done.stdout


def test_gaps_refuses_a_model_that_is_not_a_vae_and_k_below_one(tmp_path, vae_run):
    ae = vaelab.train("ae", "digits", tmp_path / "ae", epochs=1, hidden=(16,), latent_dim=4)
    with pytest.raises(VaelabError, match="AutoEncoder is not a VAE: vaelab gaps needs an encoder"):
        run_gaps(load(ae.path))
    done = subprocess.run([*VAELAB, "gaps", str(ae.path)], capture_output=True, text=True)
    assert done.returncode == 2 and "is not a VAE" in done.stderr and "Traceback" not in done.stderr
    assert not (ae.path / "gaps.json").exists()
    for bad, message in (({"k": 0}, "--k must be >= 1, got 0"), ({"points": 0}, "--points must be >= 1")):
        with pytest.raises(VaelabError, match=message):
            run_gaps(vae_run, **bad)


def test_every_gaps_key_is_explained_on_the_run_folder_page():
    page = (Path(__file__).resolve().parents[1] / "docs" / "run-folder.md").read_text()
    section = page.split("## `gaps.json`", 1)[1].split("\n## ", 1)[0]
    m, x = linear_vae("diagonal")
    report = {"model": "", "data": "", "split": "", **inference_gaps(m, x[:3], k=2, steps=2)}
    for key, value in report.items():
        assert f"`{key}`" in section, key
        if isinstance(value, dict):
            assert set(value) == {"mean", "stderr", "points"} and all(f"`{k}`" in section for k in value)
