"""Fits without gradient steps, registered per model type in ``FITTERS`` and run by the trainer in place of its
gradient loop: the linear-Gaussian model's closed form (Tipping & Bishop's pPCA) and EM (pPCA and factor analysis).

Each logs one row per step (``log_px``, the mean training log-likelihood in nats, and ``loss`` = -log_px), prints
the warnings of the fit (noise variances raised to the floor) through the run's log, and returns its step count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor

from vaelab.models.linear_gaussian import LinearGaussian
from vaelab.training.hooks import FITTERS


@FITTERS.register(LinearGaussian)
def fit_linear_gaussian(
    model: LinearGaussian,
    train: Tensor,
    log: Callable[[dict[str, Any]], None],
    stop: Callable[[], bool],
    say: Callable[[str], None] = print,
) -> int | None:
    """fit=closed-form: one step; fit=em: one step per EM iteration; fit=sgvb: None (the trainer's gradient loop)."""
    if model.amortized:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if model.config.fit == "closed-form":
            ll = model.fit_closed_form(train)
            log({"step": 1, "loss": -ll, "log_px": ll})
            steps = 1
        else:
            steps = 0
            for steps, ll in enumerate(model.fit_em(train), 1):
                log({"step": steps, "loss": -ll, "log_px": ll})
                if stop():
                    break
    last = {str(w.message).partition(":")[0]: str(w.message) for w in caught}  # the last of each kind
    for message in last.values():
        say(f"warning: {message}")
    return steps
