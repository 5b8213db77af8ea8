"""A run folder: everything needed to rebuild, resume, evaluate and look at one training run.

RUN/config.json          the run config: model, data and training options, and the data spec the model was built for
RUN/model/               the kept weights as a saved module (config.json + model.safetensors, ``save_pretrained``):
                         the best validation epoch when there is a validation split; ``vaelab.from_pretrained`` reads it
RUN/checkpoint.pt        training state for --resume (weights, optimizer, schedule, step, every RNG), atomic
RUN/metrics.jsonl        one JSON object per logged training interval, per validation and per epoch (split "epoch")
RUN/tb/                  TensorBoard events
RUN/figures/*.png        reconstructions, samples, learning curve, and each model's own figures
RUN/eval.json            written by `vaelab eval` (`vaelab disentanglement` adds its key)
RUN/prediction.json      written by `vaelab predict` (sequence models); RUN/probe.json by `vaelab probe`
RUN/prior/               a VQ run's code prior: itself a run folder, written by `vaelab train-prior`

Every file is written through a temporary file and a rename, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import atomic_write, write_text
from vaelab.models import Model
from vaelab.runs.config import RunConfig

CHECKPOINT_FORMAT = "vaelab-checkpoint"
CONFIG = "config.json"
MODEL_DIR = "model"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    return write_text(path, json.dumps(obj, indent=2))


def save_config(run_dir: Path, config: RunConfig) -> None:
    """Write RUN/config.json."""
    write_json(Path(run_dir) / CONFIG, config.to_dict())


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """RUN/config.json as a ``RunConfig``; a missing folder or config, or a corrupt file, is one clear error."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise VaelabError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise VaelabError(f"{run_dir} is not a vaelab run: it has no {CONFIG}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{path} is not valid JSON ({e}); it is corrupt or not a vaelab run") from None
    return RunConfig.from_dict(d, str(path))


def save_weights(run_dir: Path, model: Model) -> None:
    """The kept weights, as a saved module in RUN/model/."""
    model.save_pretrained(Path(run_dir) / MODEL_DIR)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write RUN/checkpoint.pt atomically: the training state, marked with the checkpoint format."""
    atomic_write(Path(run_dir) / CHECKPOINT, lambda p: torch.save({"format": CHECKPOINT_FORMAT, **state}, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint's state (loaded weights-only); a missing, truncated or foreign file is refused."""
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


def load_model_state(model: Model, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights into ``model``; weights that do not fit its config are refused, naming ``path`` and the mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = " ".join(line.strip() for line in str(e).splitlines()[1:2]) or str(e).splitlines()[0]
        raise VaelabError(f"the weights in {path} do not fit the model described in config.json ({first})") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl as a list of rows ([] before the first); needs no weights, so it reads interrupted runs."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
