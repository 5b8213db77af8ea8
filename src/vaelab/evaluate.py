"""Test-set evaluation of a run: loss terms, ELBO, IWAE log-likelihood, reconstruction, latent usage.

The latent statistics are pure functions of codes, so other metrics can reuse them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent, kl_divergence

from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.features import sparsity_statistics
from vaelab.models import Model
from vaelab.run import Run

EVAL_SEED = 0
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: a unit is active when Cov_x(E_q[z_u]) > 0.01
COLLAPSE_FRACTION = 0.5  # fewer active units than this share of the latent: the posterior has collapsed


def active_units(posterior_means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent units whose posterior mean varies across data: Var_x(E_q[z_u]) > threshold."""
    return int((posterior_means.float().var(dim=0) > threshold).sum())


@torch.no_grad()
def evaluate_model(
    model: Model, data: Dataset, split: str = "test", iw_samples: int | None = None, batch_size: int = 500
) -> dict[str, Any]:
    """Average loss terms over a split, plus the IWAE bound for models that have a likelihood bound."""
    if iw_samples is not None and iw_samples < 1:
        raise VaelabError(f"--iw-samples must be >= 1, got {iw_samples}")
    model.eval()
    torch.manual_seed(EVAL_SEED)
    sums: dict[str, Tensor] = {}
    codes, kl_dims, iwae = [], [], []
    n, iw_seconds = 0, 0.0
    for x in data.eval_batches(split, batch_size):
        loss = model.loss(x)
        for k, v in {"loss": loss.total, **loss.terms, **model.metrics(x)}.items():
            sums[k] = sums.get(k, 0) + v * len(x)
        sums["mse"] = sums.get("mse", 0) + ((model.reconstruct(x) - x) ** 2).flatten(1).mean(1).sum()
        codes.append(model.code(x))
        q = model.encode(x)
        if isinstance(q, Independent) and hasattr(model, "prior"):
            kl_dims.append(kl_divergence(q.base_dist, model.prior().base_dist).sum(0))
        if iw_samples and hasattr(model, "log_likelihood"):
            start = time.perf_counter()
            iwae.append(model.log_likelihood(x, iw_samples).cpu())  # .cpu() waits for the device: honest timing
            iw_seconds += time.perf_counter() - start
        n += len(x)
    if n == 0:
        raise VaelabError(f"the {split} split of {data.name} is empty")
    result: dict[str, Any] = {"split": split, "num_examples": n}
    result.update({k: float(v) / n for k, v in sums.items()})
    all_codes = torch.cat(codes)
    result["latent_dim"] = all_codes.shape[1]
    result["active_units"] = active_units(all_codes)
    if model.generative:  # most units carry nothing about x: q(z|x) = p(z) there
        result["posterior_collapsed"] = result["active_units"] < COLLAPSE_FRACTION * result["latent_dim"]
    if isinstance(q, Tensor):  # a deterministic code: how sparse it is
        result.update(sparsity_statistics(all_codes))
    if hasattr(model, "codebook_usage"):  # vector-quantized models: code usage over the whole split
        result.update(model.codebook_usage(data.eval_batches(split, batch_size)))
    if "mse_corrupted" in result and "mse_denoised" in result:  # a denoising model
        result["denoising_gain_db"] = 10 * math.log10(result["mse_corrupted"] / result["mse_denoised"])
    if kl_dims:
        result["kl_per_dim"] = (torch.stack(kl_dims).sum(0) / n).tolist()
    if iwae:
        result["iw_samples"] = iw_samples
        result["iwae"] = float(torch.cat(iwae).mean())
        result["nll"] = -result["iwae"]
        result["iwae_samples_per_s"] = n * iw_samples / max(iw_seconds, 1e-9)
    return result


def evaluate(
    run: Run, split: str = "test", iw_samples: int | None = None, device: str = "cpu", data_dir: str | None = None
) -> dict[str, Any]:
    """Evaluate a loaded run and write RUN/eval.json (the IWAE default is K=1000 for generative models)."""
    if iw_samples is None and run.model.generative:
        iw_samples = 1000
    model = run.model.to(device)
    data = run.dataset(device, data_dir)
    result = evaluate_model(model, data, split, iw_samples, run.config.train.eval_batch_size)
    return run.write_report("eval.json", {**result, **_kept(run.path / "eval.json")})


def _kept(path) -> dict[str, Any]:
    """Entries other commands merged into eval.json (``vaelab disentanglement``), kept when it is rewritten."""
    import json

    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {k: previous[k] for k in ("disentanglement",) if isinstance(previous, dict) and k in previous}
