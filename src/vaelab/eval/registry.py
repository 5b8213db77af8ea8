"""Evaluation attached to model types from outside the models (dispatch on the class, as ``register_kl`` does).

``BATCH_METRICS``      fn(model, x) -> {name: scalar tensor}: batch means, averaged over a split by ``evaluate``
``SPLIT_METRICS``      fn(model, data, split, batch_size) -> {name: number or list}: needs a whole split at once
                       (active units, sparsity, codebook usage, denoising)
``LOG_LIKELIHOOD``     fn(model, x, samples) -> (B,) log p(x) or a lower bound on it (the IWAE bound at K = samples),
                       for the models that have one; ``evaluate`` reports it as ``iwae`` and ``nll``

For ``BATCH_METRICS`` and ``SPLIT_METRICS`` every function registered along the model's class hierarchy runs (the
most general first) and the results are merged; ``LOG_LIKELIHOOD`` takes the nearest class's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from vaelab.core.registry import TypeRegistry

BATCH_METRICS: TypeRegistry[Callable[[Any, Tensor], dict[str, Tensor]]] = TypeRegistry("batch metrics")
SPLIT_METRICS: TypeRegistry[Callable[[Any, Any, str, int], dict[str, Any]]] = TypeRegistry("split metrics")
LOG_LIKELIHOOD: TypeRegistry[Callable[[Any, Tensor, int], Tensor]] = TypeRegistry("log-likelihood")
