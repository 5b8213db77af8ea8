"""The Python API, mirroring the CLI: ``train`` a model on a data set, ``load`` a run, ``evaluate`` it."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from vaelab.config import make_config
from vaelab.data import DataConfig
from vaelab.errors import VaelabError
from vaelab.models import MODELS
from vaelab.run import Run, RunConfig, load
from vaelab.training.config import TrainConfig
from vaelab.training.trainer import train as _train


def make_run_config(model: str, data: str, options: dict[str, Any]) -> RunConfig:
    """Sort flat options (``beta=4``, ``epochs=3``, ``model.hidden=200,200``) into the three sections.

    A bare key goes to whichever section has it; ``section.key`` names the section explicitly.
    """
    model_cls = MODELS.get(model)
    classes = {"model": model_cls.Config, "data": DataConfig, "train": TrainConfig}
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {"name": data}, "train": {}}
    for key, value in options.items():
        section, _, name = key.rpartition(".")
        if section and section not in classes:
            raise VaelabError(f"unknown config section {section!r} in {key!r}; choose from: model, data, train")
        owners = (
            [section] if section else [s for s, c in classes.items() if name in {f.name for f in dataclasses.fields(c)}]
        )
        if not owners or name not in {f.name for f in dataclasses.fields(classes[owners[0]])}:
            valid = sorted(f.name for c in classes.values() for f in dataclasses.fields(c) if f.name != "name")
            raise VaelabError(f"unknown config key {key!r} for model {model!r}; valid keys: {', '.join(valid)}")
        sections[owners[0]][name] = value
    return RunConfig(
        model=model,
        model_config=make_config(model_cls.Config, sections["model"], "model"),
        data=make_config(DataConfig, sections["data"], "data"),
        train=make_config(TrainConfig, sections["train"], "train"),
    )


def default_run_dir(model: str, data: str) -> Path:
    return Path("runs") / f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(model: str, data: str = "digits", out: str | os.PathLike | None = None, **options: Any) -> Run:
    """Train a registered model, e.g. ``vaelab.train("vae", "mnist", epochs=5, latent_dim=32, beta=2)``."""
    config = make_run_config(model, data, options)
    run_dir = _train(config, out or default_run_dir(model, data))
    return load(run_dir)


def resume(run_dir: str | os.PathLike) -> Run:
    """Continue an interrupted run exactly where its checkpoint stopped."""
    return load(_train(None, run_dir, resume=True))
