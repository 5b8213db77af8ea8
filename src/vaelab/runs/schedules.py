"""Learning-rate schedules, found by name (``--set lr_schedule=NAME``): each gives the factor of the base lr at a
training step, from the run's ``TrainConfig``, its steps per epoch and its total steps (the trainer's ``LambdaLR``).
A new schedule is one function here plus its registration."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vaelab.core.registry import Registry

#: (step, the train config, steps per epoch, total steps) -> the factor of the base lr
Schedule = Callable[[int, Any, int, int], float]
LR_SCHEDULES: Registry[Schedule] = Registry("lr_schedule")


@LR_SCHEDULES.register("constant", "the base lr throughout (the default)")
def constant(step: int, train: Any, steps_per_epoch: int, total_steps: int) -> float:
    return 1.0


@LR_SCHEDULES.register("cosine", "half a cosine from the base lr to 0 over the run")
def cosine(step: int, train: Any, steps_per_epoch: int, total_steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


@LR_SCHEDULES.register("exponential", "x lr_decay per epoch, applied smoothly step by step")
def exponential(step: int, train: Any, steps_per_epoch: int, total_steps: int) -> float:
    return train.lr_decay ** (step / steps_per_epoch)


@LR_SCHEDULES.register("multistep", "x lr_decay from each epoch of lr_milestones on (torch's MultiStepLR)")
def multistep(step: int, train: Any, steps_per_epoch: int, total_steps: int) -> float:
    """As MultiStepLR stepped once per epoch: from epoch m of the milestones on, one more factor of lr_decay."""
    return train.lr_decay ** sum(step // steps_per_epoch >= m for m in train.lr_milestones)


@LR_SCHEDULES.register("iwae", "Burda et al.'s stages: 3^i epochs at lr * 10^(-i/7)")
def iwae(step: int, train: Any, steps_per_epoch: int, total_steps: int) -> float:
    """Stage i covers epochs [(3^i - 1)/2, (3^(i+1) - 1)/2): i = floor(log3(2e + 1))."""
    stage = math.floor(math.log(2 * (step // steps_per_epoch) + 1, 3) + 1e-9)
    return 10 ** (-stage / 7)
