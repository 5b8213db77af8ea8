"""The trainer: run folder contents, exact resume, Ctrl-C, NaN handling, early stopping, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.models import MODELS
from vaelab.models.ae import AutoEncoder
from vaelab.models.base import Loss
from vaelab.runs.config import TrainConfig
from vaelab.runs.schedules import LR_SCHEDULES
from vaelab.training.trainer import NonFiniteLoss

VAELAB = [sys.executable, "-m", "vaelab.cli"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_run_folder_has_everything(vae_run):
    files = {p.name for p in vae_run.path.iterdir()}
    assert {"config.json", "model", "checkpoint.pt", "metrics.jsonl", "tb", "figures"} <= files
    assert {p.name for p in (vae_run.path / "model").iterdir()} == {"config.json", "model.safetensors"}
    assert {"reconstructions.png", "samples.png", "learning_curve.png"} <= {
        p.name for p in (vae_run.path / "figures").iterdir()
    }
    config = json.loads((vae_run.path / "config.json").read_text())
    assert config["model"] == "vae" and config["data_spec"] == {"shape": [1, 8, 8], "size": 1350}
    records = vae_run.metrics()
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 40 and {"loss", "reconstruction", "kl", "elbo", "samples_per_s"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]  # it learned
    assert any((vae_run.path / "tb").iterdir())


def test_load_rebuilds_the_trained_model(vae_run):
    run = vaelab.load(vae_run.path)
    x = run.dataset().test[:16]
    torch.manual_seed(0)
    a = run.model.loss(x).total
    torch.manual_seed(0)
    b = vae_run.model.loss(x).total
    assert torch.equal(a, b)


def test_same_seed_same_weights(tmp_path):
    a = vaelab.train("ae", "digits", tmp_path / "a", epochs=2, seed=3, likelihood="gaussian")
    b = vaelab.train("ae", "digits", tmp_path / "b", epochs=2, seed=3, likelihood="gaussian")
    wa, wb = weights(a.path), weights(b.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


SMALL = ["--epochs", "60", "--latent-dim", "4", "--set", "hidden=32"]


def _interrupt_then_resume(tmp_path: Path) -> Path:
    run = tmp_path / "interrupted"
    args = [*VAELAB, "train", "vae", "--data", "digits", "--out", str(run), *SMALL]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until training is under way, then press Ctrl-C
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) > 20:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # 128 + SIGINT, like other tools
    assert "interrupted (Ctrl-C); resume with: vaelab train --resume" in err and "Traceback" not in err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert 0 < state["step"] and state["epoch"] < 60 and not state["finished"]
    done = subprocess.run([*VAELAB, "train", "--resume", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return run


def test_ctrl_c_then_resume_gives_the_same_weights_as_no_interruption(tmp_path):
    resumed = _interrupt_then_resume(tmp_path)
    straight = tmp_path / "straight"
    subprocess.run([*VAELAB, "train", "vae", "--data", "digits", "--out", str(straight), *SMALL], check=True)
    a, b = checkpoint_weights(resumed), checkpoint_weights(straight)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    again = subprocess.run([*VAELAB, "train", "--resume", str(resumed)], capture_output=True, text=True)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_a_finished_run_trained_on_equals_a_longer_run(tmp_path):
    """--resume RUN --epochs N: 2 epochs then on to 4 give the weights of 4 epochs straight (data order, RNG)."""
    from vaelab.training.trainer import train

    opts = {"epochs": 2, "seed": 5, "latent_dim": 4, "hidden": (32,)}
    short = vaelab.train("vae", "digits", tmp_path / "short", **opts)
    straight = vaelab.train("vae", "digits", tmp_path / "straight", **{**opts, "epochs": 4})
    train(None, short.path, resume=True, epochs=4)
    assert json.loads((short.path / "config.json").read_text())["train"]["epochs"] == 4
    a, b = checkpoint_weights(short.path), checkpoint_weights(straight.path)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in short.metrics() if r["split"] == "val"] == [1, 2, 3, 4]


def test_training_on_is_refused_where_it_would_not_be_the_longer_run(tmp_path):
    from vaelab.training.trainer import train

    run = vaelab.train("vae", "digits", tmp_path / "r", epochs=2, latent_dim=4, hidden=(32,))
    with pytest.raises(VaelabError, match="must be more than that"):
        train(None, run.path, resume=True, epochs=1)
    cosine = vaelab.train("vae", "digits", tmp_path / "c", epochs=1, latent_dim=4, hidden=(32,), lr_schedule="cosine")
    with pytest.raises(VaelabError, match="lr_schedule=cosine"):
        train(None, cosine.path, resume=True, epochs=3)
    with pytest.raises(VaelabError, match="extends a resumed run"):
        train(None, tmp_path / "new", epochs=3)


def test_a_budget_in_steps_ends_the_run_mid_epoch_validated_finished_and_resumes_exactly(tmp_path):
    """max_steps: the run stops after that many steps in all, inside an epoch, and finishes like any run (a last
    training row, a validation row for the epoch it ended in, the cosine at 0); Ctrl-C then resume gives the
    straight run's weights; a step budget is not trained on by epochs; a negative one is refused."""
    from vaelab.training.trainer import train

    opts = {"latent_dim": 4, "hidden": (32,), "log_every": 4, "val_fraction": 0.1, "seed": 2}
    one = vaelab.train("vae", "digits", tmp_path / "one", epochs=1, **opts)
    per_epoch = max(r["step"] for r in one.metrics())
    budget = per_epoch + per_epoch // 2 + 1  # ends inside epoch 2
    run = vaelab.train("vae", "digits", tmp_path / "budget", epochs=5, max_steps=budget, lr_schedule="cosine", **opts)
    rows = run.metrics()
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    assert state["finished"] and state["step"] == budget and state["epoch"] == 1 and state["batch_in_epoch"] > 0
    assert max(r["step"] for r in rows if r["split"] == "train") == budget
    assert [(r["epoch"], r["step"]) for r in rows if r["split"] == "val"] == [(1, per_epoch), (2, budget)]
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    assert lrs[-1] < 1e-6 * lrs[0]  # the cosine decays over the budget, not over the 5 epochs

    straight = tmp_path / "straight"
    args = [*VAELAB, "train", "vae", "--data", "digits", *SMALL, "--set", "max_steps=700"]
    subprocess.run([*args, "--out", str(straight)], check=True, capture_output=True)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([*args, "--out", str(interrupted)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    metrics = interrupted / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) > 10):
        time.sleep(0.05)  # under way: then Ctrl-C
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    mid = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    assert proc.returncode == 130 and 0 < mid["step"] < 700 and not mid["finished"]
    subprocess.run([*VAELAB, "train", "--resume", str(interrupted)], check=True, capture_output=True)
    a, b = checkpoint_weights(interrupted), checkpoint_weights(straight)
    assert torch.load(straight / "checkpoint.pt", weights_only=True)["step"] == 700
    for k in a:
        assert torch.equal(a[k], b[k]), k

    with pytest.raises(VaelabError, match="budget in steps"):
        train(None, straight, resume=True, epochs=90)
    with pytest.raises(VaelabError, match="max_steps must be >= 0"):
        TrainConfig(max_steps=-1)


class ExplodingAE(AutoEncoder):
    """An autoencoder whose loss turns to NaN at step 30: the trainer must stop and keep good weights."""

    def loss(self, x, step=None):
        loss = super().loss(x, step)
        if step is not None and step >= 30:
            bad = loss.terms["reconstruction"] * float("nan")
            return Loss(bad, {"reconstruction": bad})
        return loss


@pytest.fixture
def exploding_model():
    MODELS.register("exploding-ae", "test only")(ExplodingAE)
    yield "exploding-ae"
    MODELS._entries.pop("exploding-ae")


def test_nan_loss_stops_with_the_term_and_keeps_last_good_weights(tmp_path, exploding_model):
    with pytest.raises(NonFiniteLoss, match="reconstruction") as err:
        vaelab.train(exploding_model, "digits", tmp_path / "nan", epochs=10, log_every=5, checkpoint_every=10)
    assert "step 35" in str(err.value)
    state = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    assert state["step"] <= 30
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "nan").values())


def test_early_stopping_keeps_the_best_validation_weights(tmp_path):
    run = vaelab.train("vae", "digits", tmp_path / "es", epochs=200, lr=0.01, patience=2, latent_dim=8, seed=1)
    val = [r for r in run.metrics() if r["split"] == "val"]
    assert len(val) < 200
    best = min(val, key=lambda r: r["loss"])
    assert val.index(best) == len(val) - 3  # stopped two epochs after the best one
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    assert state["best_epoch"] == best["epoch"] and math.isclose(state["best_val"], best["loss"], rel_tol=1e-6)


def test_lr_schedules(tmp_path):
    run = vaelab.train("ae", "digits", tmp_path / "cos", epochs=3, lr_schedule="cosine", log_every=1, val_fraction=0)
    lrs = [r["lr"] for r in run.metrics() if r["split"] == "train"]
    assert lrs[0] < 1e-3 and lrs[-1] < 1e-6 and all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_multistep_schedule_follows_torch_multisteplr():
    """lr_schedule=multistep against torch's own MultiStepLR stepped once per epoch (pythae's static-MNIST setting)."""
    tc = TrainConfig(lr_schedule="multistep", lr_milestones=(2, 5), lr_decay=10 ** (-1 / 5))
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = torch.optim.lr_scheduler.MultiStepLR(reference, milestones=[2, 5], gamma=10 ** (-1 / 5))
    for epoch in range(8):
        for step in (epoch * 7, epoch * 7 + 6):
            assert LR_SCHEDULES.get("multistep")(step, tc, 7, 56) == pytest.approx(schedule.get_last_lr()[0], rel=1e-12)
        reference.step()
        schedule.step()
    for bad in (
        {"lr_schedule": "multistep"},
        {"lr_milestones": (3,)},
        {"lr_schedule": "multistep", "lr_milestones": (5, 3)},
    ):
        with pytest.raises(VaelabError, match="lr_milestones"):
            TrainConfig(**bad)


def test_kl_warmup_reaches_the_model(tmp_path):
    run = vaelab.train("vae", "digits", tmp_path / "wu", epochs=1, kl_warmup_steps=100, log_every=1, val_fraction=0)
    rec = [r for r in run.metrics() if r["split"] == "train"]
    # loss = reconstruction + (step/100) * kl during warm-up, where step counts from 0
    for i, r in enumerate(rec):
        assert math.isclose(r["loss"], r["reconstruction"] + i / 100 * r["kl"], rel_tol=1e-5)


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_mixed_precision_trains(tmp_path, precision):
    run = vaelab.train("vae", "digits", tmp_path / precision, epochs=3, precision=precision)
    train = [r for r in run.metrics() if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) for r in train) and train[-1]["loss"] < train[0]["loss"]


def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    """DDP over 2 gloo processes with batch B equals 1 process with batch 2B (same seed)."""
    common = dict(epochs=2, seed=5, likelihood="gaussian", val_fraction=0, latent_dim=4, hidden=(64,))
    one = vaelab.train("ae", "digits", tmp_path / "one", batch_size=100, devices=1, **common)
    two = vaelab.train("ae", "digits", tmp_path / "two", batch_size=50, devices=2, **common)
    w1, w2 = weights(one.path), weights(two.path)
    start = vaelab.train(
        "ae", "digits", tmp_path / "zero", batch_size=100, devices=1, **{**common, "epochs": 1, "lr": 1e-12}
    )
    moved = max(float((w1[k] - weights(start.path)[k]).abs().max()) for k in w1)
    assert moved > 1e-3  # training really changed the weights
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)


def test_existing_run_folder_is_not_overwritten(tmp_path, vae_run):
    with pytest.raises(VaelabError, match="already holds a run"):
        vaelab.train("vae", "digits", vae_run.path, epochs=1)


if os.environ.get("VAELAB_DATA"):

    def test_mnist_trains_and_evaluates(tmp_path):
        run = vaelab.train("vae", "mnist", tmp_path / "mnist", epochs=1, latent_dim=8, val_fraction=0.02)
        result = vaelab.evaluate(run, iw_samples=10)
        assert result["num_examples"] == 10000
        assert result["iwae"] >= result["elbo"] - 0.5 and -200 < result["iwae"] < -80


def test_a_slow_validation_says_so_in_the_log(tmp_path, monkeypatch):
    """Validating a large split takes minutes (the whole dSprites grid): its progress lines name it, and the next
    lines after it name the epoch again."""
    from vaelab.runs import make_run_config
    from vaelab.training.trainer import Trainer

    monkeypatch.setenv("VAELAB_PROGRESS_SECONDS", "0.05")
    config = make_run_config("vae", "digits", {"latent_dim": 2, "hidden": (8,), "epochs": 2, "batch_size": 500})
    (tmp_path / "run").mkdir()
    trainer = Trainer(config, tmp_path / "run", torch.device("cpu"))
    batches = trainer.data.eval_batches

    def slow(split: str, size: int):
        for x in batches(split, size):
            time.sleep(0.3)
            yield x

    monkeypatch.setattr(trainer.data, "eval_batches", slow)
    trainer.fit()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "validating epoch 1: 2/4 steps" in log and "validating epoch 2: 4/4 steps" in log
    last = log.splitlines()[-1]  # after validating, the epoch is named again
    assert " epoch 2: 4/4 steps (100%)" in last and "validating" not in last
