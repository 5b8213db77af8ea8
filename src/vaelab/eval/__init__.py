"""Evaluation: split metrics and likelihood bounds (``evaluate``), latents (``latents``), VQ codes (``codes``), feature
quality (``features``), sequences (``sequences``), gradient variance, and ``disentanglement`` (one metric per file).

Model-specific numbers are registered by model type in ``registry`` (and per-epoch ones in
``vaelab.training.hooks``); importing this package registers them all.
"""

from vaelab.eval import codes, features, gaps, latents, sequences  # noqa: F401  (registration)
from vaelab.eval.evaluate import evaluate, evaluate_model
from vaelab.eval.features import probe
from vaelab.eval.registry import BATCH_METRICS, LOG_LIKELIHOOD, SPLIT_METRICS

__all__ = ["BATCH_METRICS", "LOG_LIKELIHOOD", "SPLIT_METRICS", "evaluate", "evaluate_model", "probe"]
