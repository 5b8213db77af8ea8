"""The gated PixelCNN prior over codes: causality, its NLL, sampling; train-prior, sample and eval via the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vaelab
from cli_helpers import fails_with, run_cli
from vaelab.models.code_prior import CodePrior, CodePriorConfig
from vaelab.nn import GatedPixelCNN


@pytest.mark.parametrize("kernel", [3, 5])
def test_pixelcnn_is_causal_in_raster_order(kernel):
    torch.manual_seed(0)
    net = GatedPixelCNN(6, channels=8, layers=4, kernel=kernel).eval()
    h, w = 5, 6
    codes = torch.randint(6, (1, h, w))
    base = net(codes)
    reached = set()
    for p in range(h * w):
        i, j = divmod(p, w)
        changed = codes.clone()
        changed[0, i, j] = (changed[0, i, j] + 1) % 6
        diff = (net(changed) - base).abs().amax(1)[0].flatten()  # per position, raster order
        assert diff[: p + 1].max() == 0, f"changing position {(i, j)} changed logits at or before it"
        reached.update(q for q in range(p + 1, h * w) if diff[q] > 0)
        if j + 1 < w:
            assert diff[p + 1] > 0  # the next position in the row sees it (no blind spot to the left)
        if i + 1 < h:
            assert diff[(i + 1) * w + j] > 0  # the position below sees it
    assert len(reached) >= h * w - 2 * w  # finite receptive field: rows below see a band of columns per layer


def test_conditional_prior_sees_the_whole_condition():
    torch.manual_seed(1)
    net = GatedPixelCNN(5, channels=8, layers=2, kernel=3, cond_codes=7).eval()
    codes, cond = torch.randint(5, (2, 4, 4)), torch.randint(7, (2, 2, 2))
    other = cond.clone()
    other[:, 1, 1] = (other[:, 1, 1] + 1) % 7  # the last top code
    assert (net(codes, cond) - net(codes, other))[:, :, 0, 0].abs().max() > 0  # conditions even the first code


def test_prior_nll_is_the_cross_entropy_by_hand():
    torch.manual_seed(2)
    config = CodePriorConfig(codebook_size=6, grids=(2, 2, 4, 4), channels=8, layers=2, kernel=3)
    prior = CodePrior(config, (20,)).eval()
    top, bottom = torch.randint(6, (3, 2, 2)), torch.randint(6, (3, 4, 4))
    logp_top = F.log_softmax(prior.levels[0](top), 1).gather(1, top[:, None])[:, 0]
    logp_bottom = F.log_softmax(prior.levels[1](bottom, top), 1).gather(1, bottom[:, None])[:, 0]
    expected = -(logp_top.sum((1, 2)) + logp_bottom.sum((1, 2)))
    torch.testing.assert_close(prior.nll([top, bottom]), expected)
    torch.testing.assert_close(prior.loss(prior.join([top, bottom])).total, expected.mean())
    samples = prior.sample_codes(4)
    assert [s.shape for s in samples] == [(4, 2, 2), (4, 4, 4)]
    assert all(s.min() >= 0 and s.max() < 6 for s in samples)


def test_sampling_follows_the_model():
    """A prior that always predicts code 3 at every position (a huge head bias) samples only 3s."""
    net = GatedPixelCNN(5, channels=4, layers=1, kernel=3)
    with torch.no_grad():
        net.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0, 0.0]))
        net.head[-1].weight.zero_()
    assert torch.equal(net.sample(3, (2, 3)), torch.full((3, 2, 3), 3))


TINY = ["hidden_channels=16", "residual_channels=8", "residual_blocks=1", "code_dim=8", "codebook_size=16"]


def _train(capsys, out, model: str, *extra: str) -> None:
    sets = [a for s in TINY + list(extra) for a in ("--set", s)]
    code, _, err = run_cli(capsys, "train", model, "--data", "digits", "--epochs", "2", "--out", str(out), *sets)
    assert code == 0, err


@pytest.mark.parametrize(("model", "extra"), [("vqvae", ["restart_after=5"]), ("vqvae2", ["downsample=1"])])
def test_train_prior_sample_and_eval_through_the_cli(capsys, tmp_path, model, extra):
    run = tmp_path / model
    _train(capsys, run, model, *extra)
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"reconstructions.png", "codebook_usage.png", "learning_curve.png"} <= figures
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    usage = [r for r in epochs if r["split"] == "epoch"]
    key = "codebook_usage" if model == "vqvae" else "codebook_usage_bottom"
    assert len(usage) == 2 and all(0 < r[key] <= 1 for r in usage)

    fails_with(capsys, "no code prior has been fitted to this model's codes", "sample", str(run))
    code, out, err = run_cli(
        capsys, "train-prior", str(run), "--epochs", "2", "--set", "channels=8", "--set", "layers=2", "--device", "cpu"
    )
    assert code == 0, err
    assert "prior NLL of the test codes" in out
    saved = json.loads((run / "prior" / "config.json").read_text())
    prior = {k: saved["model_config"][k] for k in ("channels", "layers", "kernel")}
    assert saved["model"] == "code-prior" and prior == {"channels": 8, "layers": 2, "kernel": 5}
    assert saved["train"]["epochs"] == 2 and saved["data"]["name"] == "vq-codes"
    prior_eval = json.loads((run / "prior" / "eval.json").read_text())
    assert (run / "figures" / "prior_samples.png").stat().st_size > 0

    loaded = vaelab.load(run)
    assert loaded.model.code_prior is not None
    code, _, err = run_cli(capsys, "sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, out, err = run_cli(capsys, "eval", str(run), "--device", "cpu")
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    for k in ("reconstruction", "mse", "bits_per_dim", "bits_per_dim_uniform_prior", "prior_nll"):
        assert k in result, k
    assert abs(result["prior_nll"] - prior_eval["nll"]) < 1e-3 * max(1.0, prior_eval["nll"])
    assert 0 < result["bits_per_dim"]


def test_train_prior_on_a_non_vq_run_and_a_broken_prior(capsys, tmp_path, vae_run):
    fails_with(capsys, "it needs a VQ model (vqvae, vqvae2), but", "train-prior", str(vae_run.path))
    run = tmp_path / "vq"
    _train(capsys, run, "vqvae")
    fails_with(capsys, "lr must be a finite number > 0", "train-prior", str(run), "--lr", "0")
    fails_with(capsys, "has no continuous latent space with a prior to draw", "latents", str(run))
    fails_with(capsys, "kernel must be odd", "train-prior", str(run), "--set", "kernel=4")
    (run / "prior").mkdir()
    (run / "prior" / "config.json").write_text('{"format": "vaelab-prior", "prior": {}}')
    fails_with(capsys, "cannot be used", "sample", str(run))
    code, _, err = run_cli(capsys, "train-prior", str(run), "--epochs", "1", "--set", "channels=4", "--set", "layers=1")
    assert code == 0, err  # the broken prior is replaced
    assert vaelab.load(run).model.code_prior is not None
