"""Split evaluation of any model: its loss terms, the numbers registered for its type, and its log-likelihood bound.

loss terms         model.loss(x) in eval mode, averaged over the split (nats per data point)
BATCH_METRICS      batch means registered for the model's type (e.g. ``mse``, VQ bits/dim), averaged alike
SPLIT_METRICS      whole-split numbers registered for its type (active units, sparsity, codebook usage, ...)
LOG_LIKELIHOOD     the IWAE bound at K = ``iw_samples`` (``iwae``, ``nll`` = −iwae), where the type has one
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data import DATASETS, Dataset
from vaelab.eval.registry import BATCH_METRICS, LOG_LIKELIHOOD, SPLIT_METRICS
from vaelab.models import Model
from vaelab.runs import Run, report_name

EVAL_SEED = 0
DEFAULT_IW_SAMPLES = 1000


def has_likelihood_bound(model: Model) -> bool:
    """Whether a log-likelihood bound is registered for the model's type (``LOG_LIKELIHOOD``)."""
    return LOG_LIKELIHOOD.lookup(model) is not None


@torch.no_grad()
def evaluate_model(
    model: Model,
    data: Dataset,
    split: str = "test",
    iw_samples: int | None = None,
    batch_size: int = 500,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Average loss terms and batch metrics over a split, the split metrics, and the IWAE bound (``iw_samples``).

    ``show_progress``: a bar with the ETA on a terminal, a plain line every 30 s off one (stderr)."""
    if iw_samples is not None and iw_samples < 1:
        raise VaelabError(f"--iw-samples must be >= 1, got {iw_samples}")
    model.eval()
    torch.manual_seed(EVAL_SEED)
    bound = LOG_LIKELIHOOD.lookup(model) if iw_samples else None
    batch_metrics = BATCH_METRICS.all(model)
    sums: dict[str, Tensor] = {}
    iwae: list[Tensor] = []
    n, iw_seconds = 0, 0.0
    what = f"eval {split}" + (f", IWAE K={iw_samples}" if bound is not None else "")
    batches = math.ceil(len(data.split(split)) / batch_size)
    with Progress(batches, what, "batches", enabled=show_progress) as progress:
        for x in data.eval_batches(split, batch_size):
            loss = model.loss(x)
            values = {"loss": loss.total, **loss.terms}
            for metrics in batch_metrics:
                values.update(metrics(model, x))
            for k, v in values.items():
                sums[k] = sums.get(k, 0) + v.detach().double() * len(x)
            if bound is not None:
                start = time.perf_counter()
                iwae.append(bound(model, x, iw_samples).cpu())  # .cpu() waits for the device: honest timing
                iw_seconds += time.perf_counter() - start
            n += len(x)
            progress.advance()
    if n == 0:
        raise VaelabError(f"the {split} split of {data.name} is empty")
    result: dict[str, Any] = {"split": split, "num_examples": n}
    result.update({k: float(v) / n for k, v in sums.items()})
    for metrics in SPLIT_METRICS.all(model):
        result.update(metrics(model, data, split, batch_size))
    if iwae:
        result["iw_samples"] = iw_samples
        result["iwae"] = float(torch.cat(iwae).double().mean())
        result["nll"] = -result["iwae"]
        result["iwae_samples_per_s"] = n * iw_samples / max(iw_seconds, 1e-9)
    return result


def evaluate_run(
    run: Run, split: str = "test", iw_samples: int | None = None, device: str = "cpu", data_dir: str | None = None
) -> dict[str, Any]:
    """The numbers of a loaded run on a split (the IWAE default is K=1000 where the model has a bound); not written.

    A VQ run whose code prior cannot be used (fitted to the codes of earlier weights) is refused: its numbers with
    the prior would be wrong, and without it they would silently differ from what the prior's presence promises."""
    if run.prior_problem:
        raise VaelabError(run.prior_problem)
    if iw_samples is None and has_likelihood_bound(run.model):
        iw_samples = DEFAULT_IW_SAMPLES
    model = run.model.to(device)
    data = run.dataset(device, data_dir)
    result = evaluate_model(model, data, split, iw_samples, run.config.train.eval_batch_size)
    in_units = DATASETS.entry(run.config.data.name).meta.get("in_data_units")  # a table: its standardization undone
    return {**result, **in_units(run.config.data, result)} if in_units else result


def eval_settings(result: dict[str, Any]) -> list[str]:
    """What sets an evaluation apart from the default one (the test split at K=1000): its split and K."""
    split, k = result.get("split", "test"), result.get("iw_samples")
    if split == "test" and k in (None, DEFAULT_IW_SAMPLES):
        return []
    return [split, f"k{k}" if k else ""]


def eval_report_name(result: dict[str, Any]) -> str:
    """eval.json for the test split at K=1000 (or without a bound), else eval-SPLIT-kK.json (eval-SPLIT.json)."""
    return report_name("eval", *eval_settings(result))


def write_eval(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    """Write the result as RUN/eval.json (defaults) or RUN/eval-SPLIT-kK.json, stamped with the weights' id."""
    command = f"vaelab eval {run.path}"
    if result.get("split", "test") != "test":
        command += f" --split {result['split']}"
    if result.get("iw_samples") not in (None, DEFAULT_IW_SAMPLES):
        command += f" --iw-samples {result['iw_samples']}"
    return run.write_report(eval_report_name(result), result, command)


def evaluate(
    run: Run, split: str = "test", iw_samples: int | None = None, device: str = "cpu", data_dir: str | None = None
) -> dict[str, Any]:
    """Evaluate a loaded run and write its report (RUN/eval.json for the test split at the default K=1000, else
    RUN/eval-SPLIT-kK.json); the IWAE default is K=1000 where the model has a bound."""
    return write_eval(run, evaluate_run(run, split, iw_samples, device, data_dir))
