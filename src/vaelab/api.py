"""The Python API, mirroring the CLI: ``train`` a model on a data set, ``load`` a run, ``from_pretrained`` a saved
model, ``evaluate`` it, ``train_prior`` for a VQ run, ``sweep`` a grid of runs and ``aggregate`` it."""

from __future__ import annotations

import os
from typing import Any

import torch

from vaelab.runs import Run, load, make_run_config
from vaelab.sweeps.aggregate import Aggregate
from vaelab.sweeps.aggregate import aggregate as _aggregate
from vaelab.sweeps.spec import parse_spec
from vaelab.sweeps.sweep import run_sweep
from vaelab.training.distributed import launched
from vaelab.training.prior import train_prior as _train_prior
from vaelab.training.trainer import train as _train
from vaelab.viz import training_figures
from vaelab.viz.vq import prior_samples


def finish(run_dir: str | os.PathLike) -> Run | None:
    """The finished run, loaded, with its figures drawn (RUN/figures); None on the other ranks of a launcher's group
    (rank 0 alone writes the run folder)."""
    launch = launched()
    if launch is not None and launch.rank != 0:
        return None
    run = load(run_dir)
    training_figures(run.path, run.model, run.dataset())
    return run


def train(model: str, data: Any = "digits", out: str | os.PathLike | None = None, **options: Any) -> Run:
    """Train a registered model, e.g. ``vaelab.train("vae", "mnist", epochs=5, latent_dim=32, beta=2)``; ``out``
    None trains into a fresh folder runs/MODEL-DATA-TIME. ``data`` is a data set's name, a path (an image folder,
    .npy/.npz, .csv) or a tensor, an array or a torch Dataset yielding tensors or (tensor, label)."""
    config = make_run_config(model, data, options)
    return finish(_train(config, out))


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


def sweep(
    spec: str | os.PathLike | dict[str, Any],
    out: str | os.PathLike,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate every point of a sweep spec (a JSON/YAML file or its dict, see ``vaelab.sweeps.spec``) into
    run folders under ``out``, e.g. ``vaelab.sweep({"model": "vae", "grid": {"latent_dim": [2, 4]}, "seeds": [0, 1]},
    "runs/sweep", workers=2)``; ``engine="ray"`` runs every point as a Ray task (``address``: a cluster to join). A
    rerun skips finished runs and resumes interrupted ones. Returns the sweep's status (SWEEP/sweep.json)."""
    return run_sweep(parse_spec(spec) if isinstance(spec, dict) else spec, out, engine, workers, address)


def aggregate(sweep_dir: str | os.PathLike, csv: str | os.PathLike | None = None) -> Aggregate:
    """Gather a sweep's runs into one table (mean ± sd over seeds, per-seed values), written as CSV (default
    SWEEP/aggregate.csv), with one figure per metric in SWEEP/figures."""
    return _aggregate(sweep_dir, csv)
