"""What the trainer calls for a model's type, registered from outside the model (``vaelab.eval`` registers them).

``EPOCH_METRICS``: per class, ``fn(model, data, step) -> dict`` of numbers logged once per epoch (split "epoch" in
metrics.jsonl) after validation, on every rank (a function may reset statistics there); lists go to metrics.jsonl
only, scalars also to TensorBoard. Every function registered along the model's class hierarchy is called, the most
general first, and their numbers merged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vaelab.core.registry import TypeRegistry

EpochMetrics = Callable[[Any, Any, int], dict[str, Any]]

EPOCH_METRICS: TypeRegistry[EpochMetrics] = TypeRegistry("per-epoch metrics")
