"""The discrete codes of VQ models: bits/dim bounds, codebook usage over a split and per epoch. Registered here.

bits_per_dim_uniform_prior   (−log P(x|z_q) + n_codes log K) / (D ln 2), a uniform prior over the codes
bits_per_dim                 (−log P(x|z_q) − log p(k)) / (D ln 2) with the fitted code prior, once attached
codes_in_use, codebook_usage, codebook_perplexity     per level, over the whole split
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vaelab.data import Dataset
from vaelab.eval.registry import BATCH_METRICS, SPLIT_METRICS
from vaelab.models.vqvae import VQModel, discrete_nll, level_key
from vaelab.nn import perplexity
from vaelab.training.hooks import EPOCH_METRICS


@BATCH_METRICS.register(VQModel)
@torch.no_grad()
def discrete_bounds(model: VQModel, x: Tensor) -> dict[str, Tensor]:
    """Bits/dim bounds: with a uniform prior over the codes and, once fitted, with the learned prior."""
    outs = model.quantize(x)
    nll = discrete_nll(model.decode_quantized([o.quantized for o in outs]), x)
    if nll is None:
        return {}
    dims = math.prod(model.data_shape) * math.log(2)
    n_codes = sum(h * w for h, w in model.code_shapes())
    result = {
        "reconstruction_discrete": nll.mean(),
        "bits_per_dim_uniform_prior": (nll.mean() + n_codes * math.log(model.config.codebook_size)) / dims,
    }
    if model.code_prior is not None:
        prior_nll = model.code_prior.nll([o.codes for o in outs])
        result["prior_nll"] = prior_nll.mean()
        result["bits_per_dim"] = (nll + prior_nll).mean() / dims
    return result


@SPLIT_METRICS.register(VQModel)
@torch.no_grad()
def codebook_usage(model: VQModel, data: Dataset, split: str, batch_size: int) -> dict[str, Any]:
    """Codes in use, their share of K, and the perplexity of the code histogram over the whole split."""
    counts = [torch.zeros(q.num_codes) for q in model.quantizers().values()]
    for x in data.eval_batches(split, batch_size):
        for i, c in enumerate(model.codes(x)):
            counts[i] += torch.bincount(c.flatten(), minlength=len(counts[i])).cpu().float()
    result: dict[str, Any] = {}
    for level, n in zip(model.levels, counts):
        result[level_key("codes_in_use", level)] = int((n > 0).sum())
        result[level_key("codebook_usage", level)] = float((n > 0).float().mean())
        result[level_key("codebook_perplexity", level)] = float(perplexity(n))
    result["posterior_collapsed"] = any(int((n > 0).sum()) <= 1 for n in counts)  # one code: x is not coded
    return result


@EPOCH_METRICS.register(VQModel)
def codebook_usage_epoch(model: VQModel, data: Dataset, step: int) -> dict[str, Any]:
    """Usage and perplexity of the codes picked in this epoch's training steps; then a fresh histogram."""
    out: dict[str, Any] = {}
    for level, q in model.quantizers().items():
        out[level_key("codebook_usage", level)] = q.codes_in_use() / q.num_codes
        out[level_key("codebook_perplexity", level)] = float(q.codebook_perplexity())
        out[level_key("codebook_histogram", level)] = q.usage_histogram().tolist()
        q.reset_usage()
    return out
