"""A run folder: everything needed to rebuild, resume, evaluate and look at one training run.

RUN/config.json          model, data and training options (rebuilds the model and the data)
RUN/model.safetensors    weights (the best validation epoch when there is a validation split)
RUN/checkpoint.pt        training state for --resume (optimizer, schedule, step, RNG), atomic
RUN/metrics.jsonl        one JSON object per logged training interval, per validation and per epoch (split "epoch")
RUN/tb/                  TensorBoard events
RUN/figures/*.png        reconstructions, samples, learning curve, and each model's own figures
RUN/eval.json            written by `vaelab eval` (`vaelab disentanglement` adds its key)
RUN/prediction.json      written by `vaelab predict` (sequence models); RUN/probe.json by `vaelab probe`
RUN/prior/               a VQ run's code prior, written by `vaelab train-prior`
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaelab.config import make_config
from vaelab.data import DataConfig, Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.models import MODELS, Model, ModelConfig, build_model
from vaelab.training.config import TrainConfig

RUN_FORMAT = "vaelab-run"
CHECKPOINT_FORMAT = "vaelab-checkpoint"
VERSION = 1


@dataclass
class RunConfig:
    model: str
    model_config: ModelConfig
    data: DataConfig
    train: TrainConfig
    data_shape: tuple[int, ...] | None = None  # filled in once the data is read

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "version": VERSION,
            "model": self.model,
            "model_config": dataclasses.asdict(self.model_config),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "data_shape": list(self.data_shape) if self.data_shape else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise VaelabError(f'{where} is not a vaelab run config (no "format": "{RUN_FORMAT}")')
        model_cls = MODELS.get(d["model"])
        return cls(
            model=d["model"],
            model_config=make_config(model_cls.Config, d.get("model_config", {}), "model"),
            data=make_config(DataConfig, d.get("data", {}), "data"),
            train=make_config(TrainConfig, d.get("train", {}), "train"),
            data_shape=tuple(d["data_shape"]) if d.get("data_shape") else None,
        )


def atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def save_config(run_dir: Path, config: RunConfig) -> None:
    text = json.dumps(config.to_dict(), indent=2)
    atomic_write(run_dir / "config.json", lambda p: Path(p).write_text(text))


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise VaelabError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise VaelabError(f"{run_dir} is not a vaelab run: it has no config.json")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{path} is not valid JSON ({e}); it is corrupt or not a vaelab run") from None
    return RunConfig.from_dict(d, str(path))


def save_weights(run_dir: Path, model: Model) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.safetensors", lambda p: save_file(state, p, metadata={"format": RUN_FORMAT}))


def load_weights(model: Model, path: Path) -> None:
    if not path.is_file():
        raise VaelabError(f"{path.parent} has no trained weights ({path.name} is missing); train it first")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise VaelabError(f"weights file {path} is truncated or corrupt ({e}); retrain or resume the run") from None
    load_state(model, state, path)


def load_state(model: Model, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise VaelabError(f"weights in {path} do not fit the model described in config.json ({first})") from None


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / "checkpoint.pt", lambda p: torch.save({"format": CHECKPOINT_FORMAT, **state}, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise VaelabError(f"{path.parent} has no training checkpoint ({path.name}); it cannot be resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise VaelabError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); cannot resume from it"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise VaelabError(f"{path} is not a vaelab training checkpoint")
    return state


@dataclass
class Run:
    """A trained run, as ``vaelab.load(path)`` gives it: config, model (eval mode) and data access."""

    path: Path
    config: RunConfig
    model: Model

    def dataset(self, device: torch.device | str = "cpu", data_dir: str | None = None) -> Dataset:
        data = self.config.data if data_dir is None else dataclasses.replace(self.config.data, data_dir=data_dir)
        return load_dataset(data, self.config.train.seed, device, self.model.likelihood.needs_binary_data)

    def write_report(self, name: str, result: dict[str, Any]) -> dict[str, Any]:
        """Label a result with the run's model and data and write it atomically as RUN/name (e.g. eval.json)."""
        report = {"model": self.config.model, "data": self.config.data.name, **result}
        write_json(self.path / name, report)
        return report

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl as a list of rows ([] before the first); needs no weights, so it reads interrupted runs."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def build_run_model(config: RunConfig) -> Model:
    if config.data_shape is None:
        raise VaelabError("config.json has no data_shape; the run never started training")
    return build_model(config.model, config.data_shape, config.model_config)


def load(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> Run:
    """Load a run folder written by ``vaelab train``: its config and its trained model."""
    path = Path(run_dir)
    config = read_config(path)
    model = build_run_model(config)
    load_weights(model, path / "model.safetensors")
    model.load_extras(path)
    return Run(path, config, model.to(device).eval())
