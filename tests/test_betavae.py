"""The beta-VAE family: beta-vae, annealed-vae (capacity C), beta-tcvae (MI + TC + dim-wise KL by minibatch-weighted
sampling); their per-epoch KL per unit, traversal figures, and the disentanglement and traverse commands."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Independent, Normal

import vaelab
from cli_helpers import fails_with, run_cli
from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import weights_id
from vaelab.data import DATASETS
from vaelab.models import MODELS, DataSpec, build_model
from vaelab.models.beta_tcvae import kl_decomposition, mws_log_densities

SMALL_NET = {"backbone": "mlp", "hidden": (32,), "latent_dim": 4}


def test_registered_names():
    for name in ("beta-vae", "annealed-vae", "beta-tcvae"):
        assert name in MODELS
    for name in ("dsprites", "dsprites-small"):
        assert name in DATASETS


@pytest.mark.parametrize(
    "model, options, message",
    [
        ("beta-vae", {"beta": 0}, "beta must be > 0"),
        ("beta-vae", {"beta": -1}, "beta must be > 0"),
        ("beta-tcvae", {"beta": 0}, "beta must be > 0"),
        ("beta-tcvae", {"alpha": -1}, "alpha and gamma must be >= 0"),
        ("beta-tcvae", {"free_bits": 0.5}, "does not take free_bits"),
        ("annealed-vae", {"capacity_max": -1}, "capacity_max (C_max, nats) must be >= 0"),
        ("annealed-vae", {"gamma": 0}, "gamma must be > 0"),
        ("annealed-vae", {"capacity_steps": -1}, "capacity_steps must be >= 0"),
        ("annealed-vae", {"beta": 4}, "beta and kl_warmup_steps do not apply"),
    ],
)
def test_bad_options(model, options, message):
    with pytest.raises(VaelabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(model, (1, 8, 8), **options)


def test_beta_weighs_the_kl():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8).round()
    model = build_model("beta-vae", (1, 8, 8), beta=4.0, **SMALL_NET)
    assert model.config.beta == 4.0  # the default on dSprites
    torch.manual_seed(1)
    loss = model.loss(x, step=10)
    assert torch.allclose(loss.total, loss.terms["reconstruction"] + 4.0 * loss.terms["kl"])


def test_capacity_grows_linearly_and_the_loss_is_gamma_abs_kl_minus_c():
    model = build_model("annealed-vae", (1, 8, 8), gamma=50.0, capacity_max=10.0, capacity_steps=1000, **SMALL_NET)
    assert [model.capacity(s) for s in (0, 250, 500, 1000, 5000)] == [0.0, 2.5, 5.0, 10.0, 10.0]
    assert model.capacity(None) == 10.0  # evaluation: the objective the schedule ends at
    x = torch.rand(16, 1, 8, 8).round()
    for step in (0, 300, None):
        torch.manual_seed(2)
        loss = model.loss(x, step)
        c = model.capacity(step)
        assert float(loss.terms["capacity"]) == pytest.approx(c)
        by_hand = loss.terms["reconstruction"] + 50.0 * (loss.terms["kl"] - c).abs()
        assert torch.allclose(loss.total, by_hand)
    assert model.capacity(301) == pytest.approx(3.01)  # the C the next step uses: the per-epoch record's, at step 301


def _batch_posterior(m: int = 12, d: int = 3) -> Independent:
    torch.manual_seed(3)
    return Independent(Normal(torch.randn(m, d), torch.rand(m, d) + 0.3), 1)


def test_mws_against_brute_force():
    q, n = _batch_posterior(), 1000
    z = q.sample()
    log_qz, log_prod = mws_log_densities(q, z, n)
    mu, sd = q.base_dist.loc, q.base_dist.scale
    m, d = mu.shape
    for i in range(m):  # log q(z_i) = log (1/(N M)) sum_j q(z_i|x_j), computed directly
        dens = sum(
            math.exp(sum(Normal(float(mu[j, k]), float(sd[j, k])).log_prob(z[i, k]) for k in range(d)))
            for j in range(m)
        )
        assert float(log_qz[i]) == pytest.approx(math.log(dens / (n * m)), rel=1e-5)
        marg = [
            sum(math.exp(Normal(float(mu[j, k]), float(sd[j, k])).log_prob(z[i, k])) for j in range(m))
            for k in range(d)
        ]
        assert float(log_prod[i]) == pytest.approx(sum(math.log(v / (n * m)) for v in marg), rel=1e-5)


def test_decomposition_sums_to_the_monte_carlo_kl():
    q = _batch_posterior()
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample()
    for n in (12, 1000, 10**6):  # the log(N M) constants cancel in the sum, whatever N
        parts = kl_decomposition(q, p, z, n)
        total = parts["mi"] + parts["tc"] + parts["dimwise_kl"]
        assert torch.allclose(total, (q.log_prob(z) - p.log_prob(z)).mean(), atol=1e-5)


def test_tcvae_with_unit_weights_is_the_elbo_estimate():
    x = torch.rand(32, 1, 8, 8).round()
    model = build_model("beta-tcvae", DataSpec((1, 8, 8), 5000), alpha=1.0, beta=1.0, gamma=1.0, **SMALL_NET)
    torch.manual_seed(4)
    loss = model.loss(x, step=0)
    assert set(loss.terms) == {"reconstruction", "kl", "elbo", "mi", "tc", "dimwise_kl"}
    mc_kl = loss.terms["mi"] + loss.terms["tc"] + loss.terms["dimwise_kl"]
    assert torch.allclose(loss.total, loss.terms["reconstruction"] + mc_kl)  # -(ELBO estimate with a sampled KL)
    # the sampled KL estimates the closed-form one: over many draws they agree
    q, p = model.encode(x), model.prior()
    with torch.no_grad():
        draws = torch.stack([(q.log_prob(z) - p.log_prob(z)).mean() for z in q.sample((2000,))])
    assert float(draws.mean()) == pytest.approx(float(loss.terms["kl"].detach()), rel=0.05, abs=0.05)


def test_tcvae_needs_the_dataset_size():
    x = torch.rand(8, 1, 8, 8).round()
    with pytest.raises(VaelabError, match="needs N, the number of training points"):
        build_model("beta-tcvae", (1, 8, 8), **SMALL_NET)
    with pytest.raises(VaelabError, match="at least the batch size"):
        build_model("beta-tcvae", DataSpec((1, 8, 8), 4), **SMALL_NET).loss(x, step=0)


def test_training_gives_the_model_the_dataset_size(tmp_path):
    run = vaelab.train("beta-tcvae", "digits", tmp_path / "tc", epochs=1, batch_size=100, **SMALL_NET)
    assert run.model.data.size == run.config.data_spec.size == len(run.dataset().train) > 0
    record = json.loads((tmp_path / "tc" / "config.json").read_text())
    assert record["data_spec"]["size"] == run.model.data.size
    assert "dataset_size" not in record["model_config"]  # data, not a model option: the config is never changed
    val = [r for r in run.metrics() if r["split"] == "val"][-1]
    assert {"mi", "tc", "dimwise_kl"} <= set(val)


@pytest.fixture(scope="module")
def annealed_run(tmp_path_factory):
    """An annealed VAE on dsprites-small for two short epochs: enough for records, figures and metrics to exist."""
    out = tmp_path_factory.mktemp("runs") / "annealed"
    return vaelab.train(
        "annealed-vae",
        "dsprites-small",
        out,
        epochs=2,
        batch_size=256,
        gamma=10.0,
        capacity_max=8.0,
        capacity_steps=100,
        **SMALL_NET,
    )


def test_epoch_records_and_figures(annealed_run):
    epochs = [r for r in annealed_run.metrics() if r["split"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(len(r["kl_per_unit"]) == 4 and min(r["kl_per_unit"]) >= 0 for r in epochs)
    steps = [r["step"] for r in epochs]
    assert [r["capacity"] for r in epochs] == pytest.approx([8.0 * min(1, s / 100) for s in steps])
    figures = annealed_run.path / "figures"
    for name in ("traversals.png", "traversals.gif", "kl_per_unit.png", "reconstructions.png", "samples.png"):
        assert (figures / name).stat().st_size > 0, name
    from PIL import Image

    with Image.open(figures / "traversals.gif") as gif:
        assert gif.n_frames > 10


def test_disentanglement_command(capsys, annealed_run):
    (annealed_run.path / "eval.json").write_text(json.dumps({"model": "annealed-vae", "elbo": -1.0}))
    code, out, err = run_cli(
        capsys, "disentanglement", str(annealed_run.path), "--quick", "--metrics", "mig,sap", "--seed", "3"
    )
    assert code == 0, err
    assert "mig" in out and "sap" in out and "betavae" not in out
    path = annealed_run.path / "disentanglement-quick-seed3-mig+sap.json"  # keyed by its settings
    assert f"written: {path}" in out
    assert json.loads((annealed_run.path / "eval.json").read_text()) == {"model": "annealed-vae", "elbo": -1.0}
    entry = json.loads(path.read_text())
    assert entry["seed"] == 3 and entry["metrics"] == ["mig", "sap"] and len(entry["factors"]) == 5
    assert 0 <= entry["scores"]["mig"] <= 1 and "mig/posX" in entry["scores"]
    assert entry["weights_id"] == weights_id(annealed_run.path / "model")
    assert entry["command"] == f"vaelab disentanglement {annealed_run.path} --seed 3 --quick --metrics mig,sap"
    code, _, _ = run_cli(
        capsys, "disentanglement", str(annealed_run.path), "--quick", "--metrics", "mig", "--seed", "3"
    )
    again = json.loads((annealed_run.path / "disentanglement-quick-seed3-mig.json").read_text())["scores"]
    assert again["mig"] == entry["scores"]["mig"]  # a fixed seed: the same numbers
    assert json.loads(path.read_text()) == entry  # the first report is still there, untouched


def test_disentanglement_bad_input(capsys, annealed_run, vae_run):
    fails_with(capsys, "unknown factor 'colour'", "disentanglement", str(annealed_run.path), "--factors", "colour")
    fails_with(capsys, "unknown metric 'nope'", "disentanglement", str(annealed_run.path), "--metrics", "nope")
    err = fails_with(capsys, "has no ground-truth factors", "disentanglement", str(vae_run.path))
    assert "dsprites, dsprites-small" in err


def test_traverse_command(capsys, annealed_run, tmp_path):
    code, _, err = run_cli(capsys, "traverse", str(annealed_run.path), "--index", "5", "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "traversals-5.png").exists() and (tmp_path / "traversals-5.gif").exists()  # keyed by index
    assert (tmp_path / "kl_per_unit.png").exists()
    assert not (tmp_path / "reconstructions.png").exists() and not (tmp_path / "samples.png").exists()
    fails_with(capsys, "out of range", "traverse", str(annealed_run.path), "--index", "99999", "--out", str(tmp_path))


def test_the_papers_architectures_are_backbone_options():
    conv = build_model(
        "beta-vae", (1, 64, 64), backbone="conv", channels=(32, 32, 64, 64), conv_hidden=(256,), latent_dim=10
    )
    convs = [m for m in conv.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(c, (4, 4), (2, 2)) for c in (32, 32, 64, 64)]
    linears = [m for m in conv.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 256), (256, 20)]  # 4x4 maps, FC 256
    stem = [m for m in conv.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in stem] == [(10, 256), (256, 64 * 4 * 4)]  # the mirror
    assert conv.decode(torch.zeros(2, 10)).mean.shape == (2, 1, 64, 64)
    mlp = build_model("beta-vae", (1, 64, 64), backbone="mlp", hidden=(1200, 1200), latent_dim=10)
    widths = [(m.in_features, m.out_features) for m in mlp.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(4096, 1200), (1200, 1200), (1200, 20)]
