"""How noisy is each gradient estimator? Per-parameter variance of the loss gradient, on one model and one batch.

Every repeat redraws z (and nothing else) and takes the gradient of the loss; mean and variance per element are
accumulated in float64. The reparameterization and score-function estimators are both unbiased, so their mean
gradients agree (within Monte Carlo error); the score-function estimator pays for needing no rsample with a
variance that is orders of magnitude larger on the encoder. The decoder's gradient is the same under both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.models import MODELS, Model


@dataclass
class GradientStats:
    """The estimator's mean gradient and per-element variance for each named parameter, over ``repeats`` draws."""

    label: str
    repeats: int
    mean: dict[str, Tensor]
    variance: dict[str, Tensor]

    def total_variance(self, names: list[str] | None = None) -> float:
        """Sum of the per-element variances (the trace of the gradient's covariance)."""
        return float(sum(self.variance[n].sum() for n in names or self.variance))


def gradient_stats(
    model: Model, x: Tensor, repeats: int = 100, show_progress: bool = True, **options: object
) -> GradientStats:
    """Gradient statistics of ``model.loss(x)`` with model options replaced, e.g. gradient_estimator=...
    (``show_progress``: one step per repeat)."""
    if repeats < 2:
        raise VaelabError(f"repeats must be >= 2 to estimate a variance, got {repeats}")
    original = model.config
    fields = {f.name for f in dataclasses.fields(original)}
    if "gradient_estimator" not in fields:
        takers = [e.name for e in MODELS if "gradient_estimator" in {f.name for f in dataclasses.fields(e.obj.Config)}]
        raise VaelabError(
            f"grad-variance compares the gradient estimators of a VAE (reparameterization against score function), "
            f"but {MODELS.name_of(type(model))} samples no latent z; it needs a run of: {', '.join(takers)}"
        )
    unknown = sorted(set(options) - fields)
    if unknown:
        raise VaelabError(
            f"model {type(model).__name__} has no option {unknown[0]!r}; gradient estimators are vae options"
        )
    model.config = dataclasses.replace(original, **options)  # validated: e.g. a baseline needs mc_samples >= 2
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    squares = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    what = f"gradients, {options.get('gradient_estimator', original.gradient_estimator)}"
    try:
        with Progress(repeats, what, "repeats", enabled=show_progress) as progress:
            for _ in range(repeats):
                model.zero_grad(set_to_none=True)
                model.loss(x).total.backward()
                for n, p in params.items():
                    g = torch.zeros_like(total[n]) if p.grad is None else p.grad.double()
                    total[n] += g
                    squares[n] += g * g
                progress.advance()
    finally:
        model.config = original
        model.zero_grad(set_to_none=True)
    mean = {n: t / repeats for n, t in total.items()}
    variance = {n: (squares[n] / repeats - mean[n] ** 2).clamp(min=0) * repeats / (repeats - 1) for n in params}
    label = str(options.get("gradient_estimator", original.gradient_estimator))
    if options.get("baseline"):
        label += " + baseline"
    return GradientStats(label, repeats, mean, variance)


def mean_squared_z(a: GradientStats, b: GradientStats) -> float:
    """Mean over all elements of the squared z-score between two estimators' mean gradients: about 1 when both
    estimate the same gradient (unbiased), far above 1 when one is biased."""
    z2 = []
    for n in a.mean:
        se2 = a.variance[n] / a.repeats + b.variance[n] / b.repeats
        keep = se2 > 0
        z2.append(((a.mean[n] - b.mean[n]) ** 2 / se2)[keep])
    return float(torch.cat(z2).mean())
