"""A run's config: which model with which options, on which data, trained how (the three sections of config.json).

``TrainConfig`` holds the training loop's options (optimizer, schedule, devices, precision, checkpoints);
``RunConfig`` joins the model's name and config, the data config, the training config and, once the data has been
read, the ``DataSpec`` the model was built for. All are frozen: a changed run config is a new object.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.core.config import make_config
from vaelab.core.errors import VaelabError
from vaelab.data import DATASETS, DataConfig, describe_data
from vaelab.models import MODELS, DataSpec, ModelConfig
from vaelab.runs.schedules import LR_SCHEDULES

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's options: the ``train`` section of a run's config.json (``--set train.KEY=VALUE``).

    ``epochs``; ``max_steps``, the most optimizer steps in all (0: the epochs alone decide; a budget in steps, like
    Locatello et al.'s 300,000, ends the run mid-epoch, validated and finished); ``batch_size`` per process (the
    global batch under ``devices=N`` is N times it); Adam's ``lr`` and ``weight_decay``; ``lr_schedule``:
    ``constant``, ``cosine`` (to 0 over the run), ``exponential`` (×``lr_decay`` per epoch), ``multistep``
    (×``lr_decay`` from each epoch of ``lr_milestones`` on, as torch's ``MultiStepLR``) or ``iwae`` (Burda et al.'s
    stages: 3^i epochs at lr·10^(−i/7)); ``grad_clip``, the largest global gradient norm (0: off); ``patience``,
    epochs without a better validation loss before early stopping (0: off); ``seed``; ``device`` (``auto``, ``cpu``,
    ``cuda``), ``devices`` (DDP processes) and ``precision`` (``32``, ``bf16-mixed``, ``16-mixed``); ``log_every``
    steps between logged (and NaN-checked) training rows; ``checkpoint_every`` steps between checkpoints (there is
    also one each epoch); ``eval_batch_size`` for validation and evaluation; ``alternate`` K > 0 alternates K
    decoder steps (the encoder fixed) with K encoder steps (the decoder fixed), any VAE (0: the joint update);
    ``threads``, torch's CPU threads (0: the CPUs this process may use, or ``OMP_NUM_THREADS``; shared among the
    processes of ``devices=N``, see ``vaelab.core.threads``). Bad values are refused with one line naming the
    accepted ones.
    """

    epochs: int = 10
    max_steps: int = 0  # the run ends after this many steps in all, even mid-epoch (0: after its epochs)
    batch_size: int = 100  # per process; the global batch under --devices N is N times this
    lr: float = 1e-3
    lr_schedule: str = "constant"  # iwae: Burda et al.'s stages, 3^i epochs at lr * 10^(-i/7)
    lr_decay: float = 1.0  # exponential schedule: factor per epoch; multistep: factor at each milestone
    lr_milestones: tuple[int, ...] = ()  # multistep schedule: the epochs from which the lr is lr_decay times lower
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 turns clipping off
    patience: int = 0  # early stopping: epochs without validation improvement; 0 turns it off
    seed: int = 0
    device: str = "auto"
    devices: int = 1  # processes of data-parallel training (DDP)
    precision: str = "32"
    log_every: int = 50  # steps between logged (and NaN-checked) training metrics
    checkpoint_every: int = 500  # steps between training checkpoints (also one each epoch)
    eval_batch_size: int = 500
    alternate: int = 0  # K > 0: K steps of the decoder (encoder fixed), then K of the encoder (decoder fixed); 0: joint
    threads: int = 0  # torch CPU threads, shared among the devices=N processes; 0: the default policy

    def __post_init__(self) -> None:
        LR_SCHEDULES.entry(self.lr_schedule)  # an unknown name: one line with the choices
        for key, choices in (("precision", PRECISIONS), ("device", DEVICES)):
            if getattr(self, key) not in choices:
                raise VaelabError(f"unknown {key} {getattr(self, key)!r}; choose from: {', '.join(choices)}")
        for key in ("epochs", "batch_size", "devices", "log_every", "checkpoint_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise VaelabError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise VaelabError(f"lr must be a finite number > 0, got {self.lr}")
        if self.max_steps < 0:
            raise VaelabError(f"max_steps must be >= 0 (0: the epochs alone decide), got {self.max_steps}")
        if self.threads < 0:
            raise VaelabError(f"threads must be >= 0 (0: the CPUs this process may use), got {self.threads}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.patience < 0:
            raise VaelabError("grad_clip, weight_decay and patience must be >= 0")
        if self.alternate < 0:
            raise VaelabError(
                f"alternate must be >= 0 (0: joint updates; K: K decoder then K encoder steps), got {self.alternate}"
            )
        if not 0 < self.lr_decay <= 1:
            raise VaelabError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if (self.lr_schedule == "multistep") != bool(self.lr_milestones):
            raise VaelabError(
                "lr_milestones (epochs, e.g. lr_milestones=200,350) go with lr_schedule=multistep, and it needs them"
            )
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise VaelabError(f"lr_milestones must be increasing epochs >= 1, got {list(self.lr_milestones)}")


RUN_FORMAT = "vaelab-run"
RUN_VERSION = 2


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the model's name and config, the data config, the training config, and the ``DataSpec`` the
    model was built for (None until the data has been read). ``to_dict`` is config.json; ``from_dict`` reads it back,
    refusing files that are not vaelab run configs or come from a newer vaelab.
    """

    model: str
    model_config: ModelConfig
    data: DataConfig
    train: TrainConfig
    data_spec: DataSpec | None = None  # what the model was built for, known once the data has been read

    def to_dict(self) -> dict[str, Any]:
        """The object of config.json (format, version, model, model_config, data, train, data_spec)."""
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "model": self.model,
            "model_config": dataclasses.asdict(self.model_config),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "data_spec": self.data_spec.to_dict() if self.data_spec else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        """Rebuild a run config from config.json's object (``where`` names the file in error messages)."""
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise VaelabError(f'{where} is not a vaelab run config (no "format": "{RUN_FORMAT}")')
        if d.get("version", 0) > RUN_VERSION:
            raise VaelabError(f"{where} was written by a newer vaelab (run format {d['version']}); upgrade vaelab")
        if not isinstance(d.get("model"), str):
            raise VaelabError(f'{where} names no model (its "model" key is missing); the file is damaged')
        model_cls = MODELS.get(d["model"])
        spec = d.get("data_spec")
        return cls(
            model=d["model"],
            model_config=make_config(model_cls.Config, d.get("model_config", {}), "model"),
            data=make_config(DataConfig, d.get("data", {}), "data"),
            train=make_config(TrainConfig, d.get("train", {}), "train"),
            data_spec=DataSpec(tuple(spec["shape"]), int(spec.get("size", 0))) if spec else None,
        )


def make_run_config(model: str, data: Any, options: dict[str, Any]) -> RunConfig:
    """Sort flat options (``beta=4``, ``epochs=3``, ``model.hidden=200,200``) into the three sections.

    ``data`` is a ``DATASETS`` name, a path (an image folder, .npy/.npz, .csv) or a Python object (a tensor, an
    array, a torch Dataset): ``describe_data`` gives the data section for it (for a path: its absolute path and a
    fingerprint of its contents). A bare key goes to whichever section has it; ``section.key`` names the section
    explicitly. A data set may name the likelihood that fits it (the oscillator's real-valued signals, tables:
    gaussian); it is the default there.
    """
    model_cls = MODELS.get(model)
    classes = {"model": model_cls.Config, "data": DataConfig, "train": TrainConfig}
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
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
    train = make_config(TrainConfig, sections["train"], "train")
    sections["data"].update(describe_data(data, train.seed, sections["data"]))
    fitting = DATASETS.entry(sections["data"]["name"]).meta.get("likelihood")
    if fitting and "likelihood" in {f.name for f in dataclasses.fields(model_cls.Config)}:
        sections["model"].setdefault("likelihood", fitting)
    if sections["data"].get("data_dir") is not None:  # absolute: the run's commands work from any folder
        sections["data"]["data_dir"] = absolute(sections["data"]["data_dir"])
    return RunConfig(
        model=model,
        model_config=make_config(model_cls.Config, sections["model"], "model"),
        data=make_config(DataConfig, sections["data"], "data"),
        train=train,
    )


def absolute(folder: str | os.PathLike) -> str:
    """A folder as an absolute path (``~`` expanded), as config.json records ``data_dir``."""
    return str(Path(folder).expanduser().absolute())


def data_now(data: DataConfig, data_dir: str | os.PathLike | None = None) -> DataConfig:
    """Where a run's data is read from now: ``data_dir`` if given (the command's ``--data-dir``), else the recorded
    folder while it exists, else (the folder moved or was deleted) ``$VAELAB_DATA`` or the download cache, as for a
    run that recorded none."""
    if data_dir is not None:
        return dataclasses.replace(data, data_dir=absolute(data_dir))
    if data.data_dir is not None and not Path(data.data_dir).expanduser().is_dir():
        return dataclasses.replace(data, data_dir=None)
    return data
