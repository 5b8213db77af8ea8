"""The code prior of a VQ run, fitted by the one trainer: ``vaelab train-prior RUN`` trains a ``code-prior`` model
on the frozen run's codes into RUN/prior/, itself an ordinary run folder (resumable, with metrics and checkpoints).

The data is the ``vq-codes`` source: every split of the VQ run's data coded once by its kept weights (a fixed
binarization for Bernoulli models trained on dynamically binarized data), each image's code grids flattened and
joined, top first. Its config records the VQ weights' id (``fingerprint``): a run trained on after its prior was
fitted has other weights, and its stale prior is then refused, not silently used.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vaelab.core.errors import Interrupted, VaelabError
from vaelab.core.pretrained import weights_id
from vaelab.data import DATASETS, ImageArrays
from vaelab.models.code_prior import CodePrior
from vaelab.models.vqvae import VQModel
from vaelab.runs import (
    CHECKPOINT,
    MODEL_DIR,
    PRIOR_DIR,
    Run,
    RunConfig,
    load,
    load_checkpoint,
    make_run_config,
    read_config,
)
from vaelab.runs.folder import CONFIG
from vaelab.training.trainer import train

CODES = "vq-codes"
NEXT_DIR, OLD_DIR = "prior-next", "prior-old"  # a prior being fitted; the one it replaces, for a moment
BINARIZATION_SEED = 0
#: train-prior's defaults, where they differ from a model run's
PRIOR_TRAIN_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 1e-3}


@torch.no_grad()
def codes_of(model: VQModel, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Every level's codes of the images x, flattened and joined (N, Σ h·w), as float32."""
    parts = [CodePrior.join(model.codes(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, sum(h * w for h, w in model.code_shapes()))


@DATASETS.register(
    CODES,
    "the codes of a VQ run's data (train-prior's data): each image's code grids flattened",
    kind="codes",
    shape=(49,),  # the default: a VQ-VAE's 7x7 grid on MNIST; a run's own codes have its grids' size
    takes_path=True,
)
def load_codes(data_dir: Path | None, path: Path | None = None, fingerprint: str | None = None) -> ImageArrays:
    if path is None:
        raise VaelabError(f"{CODES} needs the VQ run whose codes it holds: set data.path=RUN (vaelab train-prior RUN)")
    if fingerprint is not None and weights_id(Path(path) / MODEL_DIR) != fingerprint:
        raise VaelabError(
            f"the weights of {path} changed since these codes were taken (it was trained on); fit a new prior: "
            f"vaelab train-prior {path}"
        )
    run = load(path, with_prior=False)
    if not isinstance(run.model, VQModel):
        raise VaelabError(f"{CODES} needs a VQ run (vqvae, vqvae2), but {path} is a {run.config.model} run")
    data = run.dataset(data_dir=None if data_dir is None else str(data_dir))
    generator = torch.Generator().manual_seed(BINARIZATION_SEED)
    train_x = torch.bernoulli(data.train, generator=generator) if data.dynamic else data.train
    bs = run.config.train.eval_batch_size
    model = run.model.eval()
    splits = {"train": codes_of(model, train_x, bs), "test": codes_of(model, data.test, bs)}
    splits["val"] = codes_of(model, data.val, bs) if data.size("val") else splits["train"]
    return ImageArrays(*(splits[s].numpy() for s in ("train", "test")), val=splits["val"].numpy())


def prior_config(run: Run, options: dict[str, Any]) -> RunConfig:
    """The run config of RUN's prior: a code-prior over its grids, on its codes, with train-prior's defaults."""
    if not isinstance(run.model, VQModel):
        raise VaelabError(
            f"train-prior fits a prior over discrete codes: it needs a VQ model (vqvae, vqvae2), but {run.path} is a "
            f"{run.config.model} run"
        )
    model = run.model
    grids = tuple(s for shape in model.code_shapes() for s in shape)
    sizes = {"codebook_size": model.config.codebook_size, "grids": grids}
    fixed = sorted(set(options) & set(sizes))
    if fixed:
        raise VaelabError(f"{fixed[0]} comes from the VQ run's codes and cannot be set")
    config = make_run_config("code-prior", CODES, {**PRIOR_TRAIN_DEFAULTS, **options, **sizes})
    data = dataclasses.replace(config.data, path="..", fingerprint=weights_id(run.path / MODEL_DIR))
    return dataclasses.replace(config, data=data)


def train_prior(run_dir: str | Path, options: dict[str, Any] | None = None) -> Run:
    """Fit the prior of a VQ run (``options``: code-prior and training keys) and return it as a run.

    The new prior trains in RUN/prior-next/ and replaces RUN/prior/ only once it has finished, so an interrupted fit
    leaves the old prior as it was; running the same command again resumes the interrupted fit."""
    run = load(run_dir, with_prior=False)
    config = prior_config(run, dict(options or {}))
    folder, pending = run.path / PRIOR_DIR, run.path / NEXT_DIR
    resume = False
    if (pending / CONFIG).is_file():
        try:
            same = read_config(pending).to_dict() == config.to_dict()
            resume = same and not load_checkpoint(pending / CHECKPOINT).get("finished")
        except VaelabError:
            resume = False
    if not resume and pending.exists():
        shutil.rmtree(pending)
    try:
        if resume:
            train(None, pending, resume=True)
        else:
            train(config, pending)
    except Interrupted as e:  # the trainer's resume hint names prior-next/; the command that resumes is this one
        what = str(e).split(";")[0]
        kept = "the old prior is kept; " if folder.exists() else ""
        again = f"the same vaelab train-prior {run.path} command again"
        raise Interrupted(f"{what}; {kept}run {again} to resume the fit", e.exit_code) from None
    if folder.exists():
        old = run.path / OLD_DIR
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(pending, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(pending, folder)
    return load(folder)
