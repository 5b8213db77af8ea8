"""Jumpy prediction on held-out sequences: how well x_{c-1+h} is predicted from the first c frames, h = 1..H.

Every predictor is scored the same way, on the same frames:

    MSE_h = mean over the frame's dimensions of (x_hat - x_{c-1+h})^2,   per sequence, then averaged
    x_hat = (1/S) sum_s mean p_D(x | z_h^s)     a sequence model's predictive mean over S imagined futures
    NLL_h = -log (1/S) sum_s p_D(x_{c-1+h} | z_h^s)   a Monte Carlo estimate of -log p(x_{c-1+h} | x_0..x_{c-1})

A model reaches z_h with the fewest jumps of at most its max_jump D (``plan_jumps``): TD-VAE jumps straight to
h <= D, a model trained with D = 1 steps h times. The baseline ``repeat last frame`` predicts x_hat = x_{c-1}
(it has no likelihood, so no NLL). ``elbo_per_frame`` is each model's l(t - 1, t) averaged over the frames.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data import Dataset
from vaelab.eval.registry import BATCH_METRICS
from vaelab.models.tdvae import TDVAE, plan_jumps
from vaelab.runs import Run, report_name

EVAL_SEED = 0
REPEAT_LAST = "repeat last frame"


@BATCH_METRICS.register(TDVAE)
@torch.no_grad()
def frame_elbo(model: TDVAE, x: Tensor) -> dict[str, Tensor]:
    """l(t - 1, t) averaged over the frames: the one-step bound per frame, in nats."""
    return {"elbo_per_frame": model.frame_elbo(x).mean()}


def _squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    return ((prediction - target) ** 2).flatten(1).mean(1)


def check_window(frames: int, context: int, horizon: int) -> None:
    if horizon < 1 or context < 1 or context + horizon > frames:
        raise VaelabError(
            f"context {context} + horizon {horizon} frames must fit the sequences' {frames} frames, with both >= 1; "
            f"e.g. --context {max(1, frames - max(1, horizon))} --horizon {min(max(1, horizon), frames - 1)}"
        )


@torch.no_grad()
def model_predictions(model: TDVAE, x: Tensor, context: int, horizon: int, samples: int) -> dict[str, Tensor]:
    """MSE and NLL of x[:, context - 1 + h] for h = 1..horizon, per sequence: {"mse": (B, H), "nll": (B, H)}."""
    check_window(x.shape[1], context, horizon)
    if samples < 1:
        raise VaelabError(f"samples must be >= 1, got {samples}")
    belief = model.beliefs(x[:, :context])[:, -1]
    mse, nll = [], []
    for h in range(1, horizon + 1):
        states = model.imagine(belief, plan_jumps(h, model.config.max_jump), samples)[:, :, -1]  # (S, B, state)
        p = model.decode(states)
        target = x[:, context - 1 + h]
        mse.append(_squared_error(p.mean.mean(0), target))
        nll.append(math.log(samples) - torch.logsumexp(p.log_prob(target), 0))
    return {"mse": torch.stack(mse, 1), "nll": torch.stack(nll, 1)}


def repeat_last_frame(x: Tensor, context: int, horizon: int) -> dict[str, Tensor]:
    """The baseline x_hat = x_{context-1} at every horizon: {"mse": (B, H)}."""
    check_window(x.shape[1], context, horizon)
    last = x[:, context - 1]
    return {"mse": torch.stack([_squared_error(last, x[:, context - 1 + h]) for h in range(1, horizon + 1)], 1)}


@torch.no_grad()
def evaluate_predictions(
    models: dict[str, TDVAE],
    data: Dataset,
    horizon: int,
    context: int | None = None,
    samples: int = 16,
    split: str = "test",
    batch_size: int = 250,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Per-horizon MSE (and NLL, per-frame ELBO for models) of each model and of repeating the last frame
    (``show_progress``: one step per batch of sequences and model)."""
    seqs = data.split(split)
    if len(seqs) == 0:
        raise VaelabError(f"the {split} split of {data.name} is empty")
    frames = seqs.shape[1]
    context = frames - horizon if context is None else context
    check_window(frames, context, horizon)
    for name, model in models.items():
        if not isinstance(model, TDVAE):
            raise VaelabError(f"{name} is a {type(model).__name__}; jumpy prediction needs a sequence model (tdvae)")
        model.eval()
    torch.manual_seed(EVAL_SEED)
    sums: dict[str, dict[str, Tensor]] = {}

    def add(name: str, values: dict[str, Tensor]) -> None:
        for key, v in values.items():
            total = sums.setdefault(name, {})
            total[key] = total.get(key, 0) + v.sum(0).double()

    steps = math.ceil(len(seqs) / batch_size) * len(models)
    with Progress(steps, f"predicting {horizon} frames ahead", "steps", enabled=show_progress) as progress:
        for i in range(0, len(seqs), batch_size):
            x = seqs[i : i + batch_size]
            add(REPEAT_LAST, repeat_last_frame(x, context, horizon))
            for name, model in models.items():
                add(name, model_predictions(model, x, context, horizon, samples))
                add(name, {"elbo_per_frame": model.frame_elbo(x).mean(1)})
                progress.advance()
    n = len(seqs)
    results = {
        name: {key: (v / n).tolist() if v.dim() else float(v) / n for key, v in values.items()}
        for name, values in sums.items()
    }
    return {
        "split": split,
        "num_sequences": n,
        "frames": frames,
        "context": context,
        "horizons": list(range(1, horizon + 1)),
        "samples": samples,
        "results": results,
    }


def predict(
    run: Run,
    baselines: dict[str, Run] | None = None,
    horizon: int | None = None,
    context: int | None = None,
    samples: int = 16,
    split: str = "test",
    device: torch.device | str = "cpu",
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Jumpy prediction of a run beside baseline runs on its data; writes RUN/prediction.json (the defaults) or
    RUN/prediction-SETTINGS.json (``prediction_report_name``)."""
    models = {"model": run.model.to(device)}
    for name, other in (baselines or {}).items():
        if dataclasses.replace(other.config.data, data_dir=None) != dataclasses.replace(run.config.data, data_dir=None):
            raise VaelabError(f"baseline {name} was trained on other data ({other.config.data.name}); compare alike")
        models[name] = other.model.to(device)
    if not isinstance(run.model, TDVAE):
        raise VaelabError(f"{run.path} holds a {run.config.model} model; jumpy prediction needs a tdvae run")
    data = run.dataset(device, None if data_dir is None else str(data_dir))
    horizon = horizon or run.model.config.max_jump
    result = {"run": str(run.path), **evaluate_predictions(models, data, horizon, context, samples, split)}
    result["baselines"] = {name: str(other.path) for name, other in (baselines or {}).items()}
    settings = prediction_settings(run.model, result)
    flags = [f"--{k} {v}" for k, v in settings.items()] + [f"--baseline {p}" for p in result["baselines"].values()]
    command = " ".join([f"vaelab predict {run.path}", *flags])
    return run.write_report(prediction_report_name(run.model, result), result, command)


def prediction_settings(model: TDVAE, result: dict[str, Any]) -> dict[str, Any]:
    """What sets a prediction apart from the default one (the test split, H = max_jump, C = frames − H, S = 16)."""
    horizon = len(result["horizons"])
    defaults = {"split": "test", "horizon": model.config.max_jump, "context": result["frames"] - horizon, "samples": 16}
    given = {"split": result["split"], "horizon": horizon, "context": result["context"], "samples": result["samples"]}
    return {k: v for k, v in given.items() if v != defaults[k]}


#: how each setting of a prediction report appears in its file name (prediction-val-h3-c5-s4.json)
SETTING_PREFIX = {"split": "", "horizon": "h", "context": "c", "samples": "s"}


def prediction_report_name(model: TDVAE, result: dict[str, Any]) -> str:
    """prediction.json at the defaults, else e.g. prediction-val-h3-c5-s4.json (only the settings that differ)."""
    return report_name(
        "prediction", *(f"{SETTING_PREFIX[k]}{v}" for k, v in prediction_settings(model, result).items())
    )
