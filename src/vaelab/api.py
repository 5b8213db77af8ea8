"""The Python API, mirroring the CLI: ``train`` a model on a data set, ``load`` a run, ``from_pretrained`` a saved
model, ``evaluate`` it, ``train_prior`` for a VQ run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from vaelab.runs import Run, load, make_run_config
from vaelab.training.prior import train_prior as _train_prior
from vaelab.training.trainer import train as _train
from vaelab.viz import training_figures
from vaelab.viz.vq import prior_samples


def default_run_dir(model: str, data: str) -> Path:
    """runs/MODEL-DATA-YYYYmmdd-HHMMSS: the run folder when none is given."""
    return Path("runs") / f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def finish(run_dir: str | os.PathLike) -> Run:
    """The finished run, loaded, with its figures drawn (RUN/figures)."""
    run = load(run_dir)
    training_figures(run.path, run.model, run.dataset())
    return run


def train(model: str, data: str = "digits", out: str | os.PathLike | None = None, **options: Any) -> Run:
    """Train a registered model, e.g. ``vaelab.train("vae", "mnist", epochs=5, latent_dim=32, beta=2)``."""
    config = make_run_config(model, data, options)
    return finish(_train(config, out or default_run_dir(model, data)))


def resume(run_dir: str | os.PathLike, epochs: int | None = None) -> Run:
    """Continue an interrupted run exactly where its checkpoint stopped (``epochs``: train it on to that many)."""
    return finish(_train(None, run_dir, resume=True, epochs=epochs))


def train_prior(run_dir: str | os.PathLike, **options: Any) -> Run:
    """Fit the code prior of a VQ run (e.g. ``epochs=10, channels=64``) and return the run with it attached."""
    _train_prior(run_dir, options)
    run = load(run_dir)
    torch.manual_seed(run.prior.config.train.seed)
    prior_samples(run.path / "figures" / "prior_samples.png", run.model)
    return run
