"""What the trainer calls for a model's type, registered from outside the model (``vaelab.eval`` registers them).

``EPOCH_METRICS``: per class, ``fn(model, data, step) -> dict`` of numbers logged once per epoch (split "epoch" in
metrics.jsonl) after validation, on every rank (a function may reset statistics there); lists go to metrics.jsonl
only, scalars also to TensorBoard. Every function registered along the model's class hierarchy is called, the most
general first, and their numbers merged.

``FITTERS``: per class, ``fn(model, train, log, stop, say) -> steps or None``: a model fitted without gradient steps
(closed form, EM). It fits ``model`` to the training tensor, calls ``log(row)`` with the numbers of each of its
steps (rows of split "train" in metrics.jsonl, ``step`` counted from 1) and ``stop()`` between steps (True: a signal
came; return at once), ``say(line)`` for its warnings, and returns the number of steps it took; None leaves the
model to the gradient loop (a config that asks for it). The trainer then validates, keeps the weights and finishes
the run as after training, so the run folder is an ordinary one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vaelab.core.registry import TypeRegistry

EpochMetrics = Callable[[Any, Any, int], dict[str, Any]]

EPOCH_METRICS: TypeRegistry[EpochMetrics] = TypeRegistry("per-epoch metrics")

Log = Callable[[dict[str, Any]], None]
Fitter = Callable[[Any, Any, Log, Callable[[], bool], Callable[[str], None]], "int | None"]

FITTERS: TypeRegistry[Fitter] = TypeRegistry("fitter")
