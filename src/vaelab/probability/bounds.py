"""The importance-weighted bound on log p(x) (Burda et al. 2015), batched over samples and data.

    log p(x) >= IWAE_K = log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)

IWAE_1 is the ELBO, and IWAE_K grows towards log p(x) as K grows.

How it runs at the speed of the decoder: q(z|x) is given (the encoder ran once per point); the K draws are taken in
groups, and each group is decoded in tiles of (samples x points) whose decoder outputs fit the cache
(``chunk_outputs``), with x broadcast against the tile (never copied K times); each group's log-weights are
reduced into a running logsumexp as they are produced, so memory does not grow with K. The plain route,
``importance_log_weights``, keeps all K log-weights (the IWAE training loss needs its two parts).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.core.errors import VaelabError

#: default cap on decoder outputs held at once (elements): the memory budget; $VAELAB_MEMORY_BUDGET overrides it
DEFAULT_BUDGET = 2**25
BUDGET_VARIABLE = "VAELAB_MEMORY_BUDGET"
#: latent rows (samples x points) drawn at once: z, log q(z|x) and log p(z) of one group of draws
DRAW_ROWS = 4096
#: decoder outputs per tile when the cache size cannot be read, and the most a tile ever holds (4 MB of float32)
FALLBACK_CHUNK = MAX_CHUNK = 2**20
CACHE_ROOT = Path("/sys/devices/system/cpu/cpu0/cache")


def memory_budget() -> int:
    """The most decoder outputs held at once: ``$VAELAB_MEMORY_BUDGET`` if set to a positive count, else 2^25."""
    value = os.environ.get(BUDGET_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_BUDGET


@functools.cache
def chunk_outputs() -> int:
    """Decoder outputs per tile of the bound: a quarter of the largest CPU cache (the L3 on most CPUs) in float32,
    read once from /sys, and at most 2^20 (``MAX_CHUNK``); 2^20 where it cannot be read. Measured with
    benchmarks/iwae_speed.py --chunks, for the bare decoder too: on a machine with 32 MiB of L3 and 1 MiB of L2,
    tiles of 2^20 to 2^21 outputs ran fastest out of 2^16 to 2^23; on a virtual machine that reports 480 MiB of L3
    (2 MiB of L2), 2^20 ran fastest and the uncapped quarter of its L3 (2^25) ran the bound 1.9x slower: big enough
    for the matrix products to run at full speed, small enough to stay in the cache a core really has."""
    sizes = []
    for index in sorted(CACHE_ROOT.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if kind != "Instruction" and digits.isdigit():
            sizes.append(int(digits) * scale)
    if not sizes:
        return FALLBACK_CHUNK
    return min(MAX_CHUNK, max(2**14, max(sizes) // 4 // 4))


def _per_point(x: Tensor) -> int:
    """Decoder outputs of one sample of p(x|z) for one data point."""
    return max(1, x[0].numel()) if x.shape[0] else 1


def _check_budget(x: Tensor, samples: int, budget: int, held: int) -> None:
    """Refuse when ``held`` samples of one data point do not fit ``budget`` decoder outputs."""
    need = held * _per_point(x)
    if need > budget:
        what = f"{samples} importance samples of one data point need" if held > 1 else "one sample of one point needs"
        why, fewer = (" (all are kept for the gradient)", "use fewer samples or ") if held > 1 else ("", "")
        raise VaelabError(
            f"{what} {need:,} decoder outputs{why}, over the memory budget of {budget:,} (${BUDGET_VARIABLE}); "
            f"{fewer}raise it, e.g. {BUDGET_VARIABLE}={2 ** math.ceil(math.log2(need))}"
        )


def importance_log_weights(
    x: Tensor,
    posterior: Distribution,
    prior: Distribution,
    decode: Callable[[Tensor], Distribution],
    samples: int,
    budget: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The two parts of log w_k = log p(x|z_k) + [log p(z_k) - log q(z_k|x)], each (K, B), for K = samples.

    Batched over the K draws and the rows of x (broadcast, not copied); drawn in chunks of K that keep ``budget``
    decoder outputs (default ``memory_budget()``) in memory. With gradients on, all K are kept for the backward
    pass, so K samples of one point must fit the budget (else one line says so).
    """
    if samples < 1:
        raise VaelabError(f"the number of importance samples must be >= 1, got {samples}")
    budget = budget or memory_budget()
    _check_budget(x, samples, budget, samples if torch.is_grad_enabled() else 1)
    per_sample = max(1, x.numel())  # elements of one sample of p(x|z) for the whole batch
    chunk = max(1, min(samples, budget // per_sample))
    log_px_z, log_ratio = [], []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        z = posterior.rsample((k,))  # (k, B, D); differentiable, so the bound can also be trained
        log_px_z.append(decode(z).log_prob(x))  # x broadcasts against the (k, B) batch
        log_ratio.append(prior.log_prob(z) - posterior.log_prob(z))
    return torch.cat(log_px_z), torch.cat(log_ratio)


def log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k exp(log_w_k) over the first dimension, without overflow."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def _spans(n: int, size: int) -> list[slice]:
    """0..n in consecutive slices of ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def importance_weighted_bound(
    x: Tensor,
    posterior: Distribution,
    prior: Distribution,
    decode: Callable[[Tensor], Distribution],
    samples: int,
    budget: int | None = None,
    chunk: int | None = None,
) -> Tensor:
    """IWAE_K for each row of x, shape (B,), K = samples; ``posterior`` is q(z|x) for the rows of x.

    The draws come in groups of about ``DRAW_ROWS`` latent rows; each group is decoded in tiles of ``chunk``
    decoder outputs (default ``chunk_outputs()``, fitted to the cache; never more than ``budget``, default
    ``memory_budget()``) and reduced into a running logsumexp. Given the same draws it computes what
    ``log_mean_exp`` of ``importance_log_weights`` does (tested), whatever the tiles.
    """
    if samples < 1:
        raise VaelabError(f"the number of importance samples must be >= 1, got {samples}")
    budget = budget or memory_budget()
    _check_budget(x, samples, budget, samples if torch.is_grad_enabled() else 1)
    points, per_point = x.shape[0], _per_point(x)
    if points == 0:
        return x.new_zeros(0)
    rows = max(1, min(budget, chunk or chunk_outputs()) // per_point)
    # a tile: tk samples of tb points, at most ``rows`` decoder rows and at least half of them; groups of draws hold
    # whole tiles, so only the last group has a short one
    tb = min(points, rows)
    tk = max(1, rows // tb)
    group = min(samples, tk * max(1, max(DRAW_ROWS, rows) // (tk * points)))
    total: Tensor | None = None
    for start in range(0, samples, group):
        k = min(group, samples - start)
        z = posterior.rsample((k,))  # (k, B, D)
        log_w = prior.log_prob(z) - posterior.log_prob(z)  # (k, B)
        columns = [_cat([decode(z[ks, bs]).log_prob(x[bs]) for ks in _spans(k, tk)], 0) for bs in _spans(points, tb)]
        log_w = log_w + _cat(columns, 1)
        reduced = torch.logsumexp(log_w, dim=0)
        total = reduced if total is None else torch.logaddexp(total, reduced)
    return total - math.log(samples)
