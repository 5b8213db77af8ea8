"""Loading what training wrote: ``from_pretrained`` for a saved module, ``load`` for a whole run folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import CONFIG, load_state, read_module_config, weights_id
from vaelab.data import Dataset, load_dataset
from vaelab.models import MODELS, Model, model_from_spec
from vaelab.runs.config import RunConfig, data_now
from vaelab.runs.folder import CONFIG as RUN_CONFIG
from vaelab.runs.folder import MODEL_DIR, read_config, read_metrics
from vaelab.runs.reports import PRIOR_DIR, write_stamped


def from_pretrained(folder: str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """A model saved with ``model.save_pretrained(folder)``, in eval mode; a run folder's model works too."""
    folder = Path(folder)
    if (folder / RUN_CONFIG).is_file() and (folder / MODEL_DIR / CONFIG).is_file():
        folder = folder / MODEL_DIR  # a run folder: its kept weights
    spec = read_module_config(folder)
    model = model_from_spec(spec)
    load_state(model, folder, spec["name"])
    return model.to(device).eval()


@dataclass
class Run:
    """A trained run, as ``vaelab.load(path)`` gives it: config, model (eval mode), data access, its prior if any."""

    path: Path
    config: RunConfig
    model: Model
    prior: Run | None = None
    prior_problem: str | None = None  # why RUN/prior/ is not attached (unfinished, unreadable, fitted to old codes)

    def dataset(self, device: torch.device | str = "cpu", data_dir: str | None = None) -> Dataset:
        """The run's data set, read as it was for training (``data_dir``: where it lives now, if it moved; without
        it a recorded folder that no longer exists gives way to ``$VAELAB_DATA``)."""
        data = data_now(self.config.data, data_dir)
        binary = type(self.model).needs_binary_data(self.config.model_config)
        return load_dataset(data, self.config.train.seed, device, binary, root=self.path)

    def write_report(self, name: str, result: dict[str, Any], command: str | None = None) -> dict[str, Any]:
        """Label a result with the run's model and data, stamp it with the weights it was computed from, the time and
        ``command`` (what writes it again), and write it atomically as RUN/name (``vaelab.runs.reports``)."""
        report = {"model": self.config.model, "data": self.config.data.name, **result}
        return write_stamped(self.path, name, report, command or f"(Python) {name}")

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of RUN/metrics.jsonl (see ``read_metrics``)."""
        return read_metrics(self.path)


def load(run_dir: str | os.PathLike, device: torch.device | str = "cpu", with_prior: bool = True) -> Run:
    """Load a run folder written by ``vaelab train``: its config, its kept model and, for a VQ run, its code prior."""
    path = Path(run_dir)
    config = read_config(path)
    if not (path / MODEL_DIR / CONFIG).is_file():
        raise VaelabError(
            f"{path} has no trained weights yet ({MODEL_DIR}/ is missing): it is still training, or was interrupted "
            f"before its first epoch ended; resume it with: vaelab train --resume {path}"
        )
    model = from_pretrained(path / MODEL_DIR, device)
    saved = MODELS.name_of(type(model))
    if saved != config.model:
        raise VaelabError(f"{path / MODEL_DIR} holds a {saved!r} model, but {path / RUN_CONFIG} names {config.model!r}")
    run = Run(path, config, model)
    if with_prior and (path / PRIOR_DIR / RUN_CONFIG).is_file():
        attach_prior(run, device)
    return run


def attach_prior(run: Run, device: torch.device | str = "cpu") -> None:
    """Load RUN/prior/ and attach it to the model, unless it is unfinished or was fitted to other weights."""
    folder = run.path / PRIOR_DIR
    command = f"vaelab train-prior {run.path}"

    def refuse(reason: str) -> None:
        run.prior_problem = reason
        run.model.attach_prior(None, reason)

    try:
        read_config(folder)
        if not (folder / MODEL_DIR / CONFIG).is_file():
            refuse(f"the code prior in {folder} has not finished training; run {command}")
            return
        prior = load(folder, device, with_prior=False)
    except VaelabError as e:
        refuse(f"the code prior in {folder} cannot be used ({e}); refit it: {command}")
        return
    if prior.config.data.fingerprint != weights_id(run.path / MODEL_DIR):
        refuse(
            f"the code prior in {folder} was fitted to the codes of earlier weights of this run (it was trained on "
            f"since); refit it: {command}"
        )
        return
    run.prior = prior
    run.model.attach_prior(prior.model)
