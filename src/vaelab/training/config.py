"""Options of the training loop (optimizer, schedule, devices, precision, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from vaelab.errors import VaelabError

LR_SCHEDULES = ("constant", "cosine", "exponential", "iwae")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100  # per process; the global batch under --devices N is N times this
    lr: float = 1e-3
    lr_schedule: str = "constant"  # iwae: Burda et al.'s stages, 3^i epochs at lr * 10^(-i/7)
    lr_decay: float = 1.0  # exponential schedule: factor per epoch
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

    def __post_init__(self) -> None:
        for key, choices in (("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS), ("device", DEVICES)):
            if getattr(self, key) not in choices:
                raise VaelabError(f"unknown {key} {getattr(self, key)!r}; choose from: {', '.join(choices)}")
        for key in ("epochs", "batch_size", "devices", "log_every", "checkpoint_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise VaelabError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise VaelabError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.patience < 0:
            raise VaelabError("grad_clip, weight_decay and patience must be >= 0")
        if not 0 < self.lr_decay <= 1:
            raise VaelabError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
