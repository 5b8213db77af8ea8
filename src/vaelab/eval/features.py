"""Feature quality: how sparse a code is, how well a denoising model restores, how linearly separable the classes are.

``sparsity_statistics`` and ``linear_probe`` are pure functions of codes (and labels); ``probe`` computes
the codes of a run's data with ``model.code`` (the posterior mean for a VAE) and fits the probe on them,
beside the same probe on raw pixels as the baseline. The probe's regularization is chosen on the
validation split, never on the test set; the final fit uses the whole training set (train + val).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data import Dataset
from vaelab.eval.registry import SPLIT_METRICS
from vaelab.models import Model
from vaelab.models.ae import AutoEncoder
from vaelab.models.dae import DenoisingAutoEncoder
from vaelab.runs import Run, report_name

ACTIVE_CODE_THRESHOLD = 0.1  # a code unit is active on an example when |h_j(x)| > this
PROBE_SEED = 0  # the binarization of dynamically binarized training data, and the subsample
C_GRID = (0.001, 0.01, 0.1, 1.0)  # the probe's inverse regularization strengths, chosen on the validation split


def treves_rolls(r: Tensor, dim: int) -> Tensor:
    """Sparseness of |r| along ``dim`` (Vinje & Gallant 2000): (1 − E[|r|]²/E[r²]) / (1 − 1/n).

    0 when every entry is the same, 1 when a single one is non-zero; NaN for all-zero slices.
    """
    r = r.abs()
    a = r.mean(dim).pow(2) / r.pow(2).mean(dim)
    return (1 - a) / (1 - 1 / r.shape[dim])


@torch.no_grad()
def sparsity_statistics(codes: Tensor, threshold: float = ACTIVE_CODE_THRESHOLD) -> dict[str, float]:
    """Sparsity of codes (N, D) over a data set.

    mean_activation      E[h_j(x)] over examples and units
    active_fraction      the fraction of units with |h_j(x)| > threshold, averaged over examples
    dead_units           units never active on any example
    lifetime_sparsity    Treves–Rolls sparseness of each unit across examples, averaged over the live units
    population_sparsity  Treves–Rolls sparseness of each example's code across units, averaged over examples
    """
    h = codes.detach().float().flatten(1)
    active = h.abs() > threshold
    return {
        "mean_activation": float(h.mean()),
        "active_fraction": float(active.float().mean()),
        "dead_units": int((~active.any(0)).sum()),
        "lifetime_sparsity": float(treves_rolls(h, 0).nanmean()) if len(h) > 1 else float("nan"),
        "population_sparsity": float(treves_rolls(h, 1).nanmean()) if h.shape[1] > 1 else float("nan"),
    }


@SPLIT_METRICS.register(AutoEncoder)
@torch.no_grad()
def code_statistics(model: AutoEncoder, data: Dataset, split: str, batch_size: int) -> dict[str, Any]:
    """The code's size and sparsity over the split (a deterministic code: no active-unit count of a posterior)."""
    codes = torch.cat([model.code(x) for x in data.eval_batches(split, batch_size)])
    return {"latent_dim": codes.shape[1], **sparsity_statistics(codes)}


@SPLIT_METRICS.register(DenoisingAutoEncoder)
@torch.no_grad()
def denoising(model: DenoisingAutoEncoder, data: Dataset, split: str, batch_size: int) -> dict[str, Any]:
    """Denoising on corrupted split data x̃ ~ M(x̃|x): the criterion −log p(x|f(x̃)), squared error per pixel before
    and after, and the gain in decibels 10 log10(mse_corrupted / mse_denoised). The corruption is drawn from a fixed
    seed, so the numbers compare across runs."""
    sums = {"reconstruction_corrupted": 0.0, "mse_corrupted": 0.0, "mse_denoised": 0.0}
    n = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        for x in data.eval_batches(split, batch_size):
            x_tilde = model.corruption.sample(x)
            restored = model.decode(model.encoder(x_tilde))
            sums["reconstruction_corrupted"] += float(-restored.log_prob(x).sum())
            sums["mse_corrupted"] += float((x_tilde - x).pow(2).flatten(1).mean(1).sum())
            sums["mse_denoised"] += float((restored.mean - x).pow(2).flatten(1).mean(1).sum())
            n += len(x)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["denoising_gain_db"] = 10 * math.log10(out["mse_corrupted"] / max(out["mse_denoised"], 1e-30))
    return out


def check_probe_options(C: float | None, max_iter: int) -> None:
    if C is not None and not C > 0:
        raise VaelabError(f"C (the inverse regularization strength of the probe) must be > 0, got {C}")
    if max_iter < 1:
        raise VaelabError(f"max_iter must be >= 1, got {max_iter}")


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Test error of a multinomial logistic regression (L2, strength 1/C) fit on standardized features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_probe_options(C, max_iter)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(train_x, train_y)
    return {
        "error": float(np.mean(classifier.predict(test_x) != test_y)),
        "train_error": float(np.mean(classifier.predict(train_x) != train_y)),
        "iterations": int(np.max(classifier[-1].n_iter_)),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
    }


def select_C(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    max_iter: int,
    grid=C_GRID,
    progress: Progress | None = None,
) -> tuple[float, dict[float, float]]:
    """The C of ``grid`` whose probe, fit on ``train``, errs least on ``val`` (the strongest among ties)."""
    errors = {}
    for C in sorted(grid):
        errors[C] = linear_probe(*train, *val, C, max_iter)["error"]
        if progress is not None:
            progress.advance()
    return min(errors, key=errors.get), errors


def fit_probe(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], C: float | None, max_iter: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Choose C on the validation split (when None), fit on train + val with it, and measure on test (``progress``
    advances once per fit)."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    val_errors: dict[float, float] = {}
    if C is None:
        if len(val[0]) == 0:
            raise VaelabError("choosing the probe's C needs a validation split (the run has val_fraction 0); give --C")
        C, val_errors = select_C(train, val, max_iter, progress=progress)
    everything = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    result = {**linear_probe(*everything, *test, C, max_iter), "C": C, "val_errors": val_errors}
    if progress is not None:
        progress.advance()
    return result


def probe_data(data: Dataset, max_train: int | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Inputs and labels of the probe's splits: train (``max_train`` of them at random), val and test.

    Training data that a run binarizes anew at every draw is binarized once here with a fixed seed,
    like its validation and test sets, so that the probe sees the same kind of input everywhere.
    """
    if data.train_labels is None or data.test_labels is None or (len(data.val) and data.val_labels is None):
        raise VaelabError(f"the data set {data.name} has no class labels; the linear probe needs them")
    train_x, train_y = data.train, data.train_labels
    if data.dynamic:
        train_x = torch.bernoulli(train_x, generator=torch.Generator(device=train_x.device).manual_seed(PROBE_SEED))
    if max_train is not None:
        if max_train < 1:
            raise VaelabError(f"max_train must be >= 1, got {max_train}")
        if max_train < len(train_x):
            keep = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(PROBE_SEED))[:max_train]
            train_x, train_y = train_x[keep.to(train_x.device)], train_y[keep.to(train_y.device)]
    val_y = data.val_labels if data.val_labels is not None else data.test_labels[:0]
    return {"train": (train_x, train_y), "val": (data.val, val_y), "test": (data.test, data.test_labels)}


@torch.no_grad()
def codes_of(model: Model, x: Tensor, batch_size: int = 500) -> Tensor:
    """model.code of every row of x, batched, in eval mode."""
    model.eval()
    return torch.cat([model.code(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def probe_model(
    model: Model,
    data: Dataset,
    max_train: int | None = None,
    C: float | None = None,
    max_iter: int = 1000,
    baseline: bool = True,
    batch_size: int = 500,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The probe's test error on the model's codes and (``baseline``) on raw pixels, with the same classifier.

    ``C`` None chooses it for each from ``C_GRID`` on the validation split; ``show_progress`` counts the fits.
    """
    check_probe_options(C, max_iter)
    splits = probe_data(data, max_train)
    result: dict[str, Any] = {
        "num_train": len(splits["train"][0]) + len(splits["val"][0]),
        "num_test": len(splits["test"][0]),
        "max_iter": max_iter,
    }
    features = {"code": lambda x: codes_of(model, x, batch_size), "pixel": lambda x: x}
    keys = ("code", "pixel") if baseline else ("code",)
    fits = len(keys) * (1 + (len(C_GRID) if C is None else 0))
    with Progress(fits, "linear probe", "fits", enabled=show_progress) as progress:
        for key in keys:
            progress.status(f"{key} features")
            arrays = {s: (features[key](x).flatten(1).cpu().numpy(), y.cpu().numpy()) for s, (x, y) in splits.items()}
            fit = fit_probe(arrays, C, max_iter, progress)
            result.update({f"{key}_{name}": value for name, value in fit.items()})
            result[f"{key}_dim"] = int(arrays["test"][0].shape[1])
    return result


def probe(
    run: Run,
    max_train: int | None = None,
    C: float | None = None,
    max_iter: int = 1000,
    baseline: bool = True,
    device: str = "cpu",
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Probe a loaded run's codes (``vaelab probe RUN``) and write RUN/probe.json (at the defaults) or
    RUN/probe-SETTINGS.json (``probe_report_name``)."""
    model = run.model.to(device)
    data = run.dataset(device, data_dir)
    result = probe_model(model, data, max_train, C, max_iter, baseline, run.config.train.eval_batch_size)
    settings = probe_settings(max_train, C, max_iter, baseline)
    flags = [
        f"--max-train {max_train}" if max_train is not None else "",
        f"--C {C:g}" if C is not None else "",
        f"--max-iter {max_iter}" if max_iter != 1000 else "",
        "" if baseline else "--no-baseline",
    ]
    command = " ".join([f"vaelab probe {run.path}", *(f for f in flags if f)])
    return run.write_report(report_name("probe", *settings), result, command)


def probe_settings(max_train: int | None, C: float | None, max_iter: int, baseline: bool) -> list[str]:
    """What sets a probe apart from the default one: n1000 (--max-train), C0.1, iter500, nobaseline."""
    return [
        f"n{max_train}" if max_train is not None else "",
        f"C{C:g}" if C is not None else "",
        f"iter{max_iter}" if max_iter != 1000 else "",
        "" if baseline else "nobaseline",
    ]
