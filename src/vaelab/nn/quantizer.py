"""Vector quantization (VQ-VAE): one module, usable on its own.

``VectorQuantizer`` maps encoder outputs z_e to their nearest codebook vectors e_k, with

* the straight-through estimator z_q = z_e + sg[e_k − z_e] (the gradient w.r.t. z_e is the identity);
* either the codebook loss ‖sg[z_e] − e‖² plus the commitment loss β‖z_e − sg[e]‖² (``ema=False``), or
  exponential-moving-average codebook updates (``ema=True``: decay γ, Laplace smoothing of the cluster
  sizes) and the commitment loss only;
* distances ‖z‖² − 2 z·e + ‖e‖² always in fp32, with autocast disabled inside, so bf16/fp16 training
  picks the same codes as fp32;
* codebook health: k-means initialisation from the first training batch, restart of codes unused for
  ``restart_after`` training steps from random current encoder outputs, usage counts and perplexity;
* under ``torch.distributed`` every collective decision is shared: EMA counts and sums and the usage
  counts are all-reduced (summed) over the processes, and the k-means result and the restart vectors are
  chosen on rank 0 and broadcast, so every rank keeps the same codebook.

Inputs are (B, D, H, W) (channels first, a 4-D tensor) or (..., D) (any other rank, the code dimension
last). Losses follow the library's convention: summed over the dimensions of one data point (all but the
first), averaged over the batch (the first dimension).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.core.errors import VaelabError

__all__ = ["QuantizerOutput", "VectorQuantizer", "perplexity", "squared_distances"]


@dataclass
class QuantizerOutput:
    """What ``VectorQuantizer.forward`` returns.

    ``quantized``: z_q with the straight-through gradient, the input's shape and dtype; ``codes``: the
    code indices (int64), the input's shape without the code dimension; ``losses``: named scalar terms
    (``commitment``, and ``codebook`` unless EMA), already weighted, to add to the objective;
    ``perplexity``: exp(−Σ p log p) of this batch's code histogram (local to the process).
    """

    quantized: Tensor
    codes: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    perplexity: Tensor | None = None

    @property
    def loss(self) -> Tensor:
        """The sum of the loss terms."""
        return sum(self.losses.values())  # type: ignore[return-value]


def perplexity(counts: Tensor) -> Tensor:
    """exp(−Σ p log p) of a code histogram (0 log 0 = 0); K when all K codes are used equally, 1 for one code."""
    counts = counts.detach().float()
    total = counts.sum()
    if total <= 0:
        return torch.ones((), device=counts.device)
    p = counts / total
    return torch.exp(-torch.special.xlogy(p, p).sum())


def squared_distances(z: Tensor, codebook: Tensor) -> Tensor:
    """‖z − e‖² for every row of z (N, D) and of the codebook (K, D): (N, K), always in fp32."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        zf, ef = z.float(), codebook.float()
        d = zf.pow(2).sum(1, keepdim=True) - 2.0 * (zf @ ef.t()) + ef.pow(2).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: Tensor) -> Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def _is_rank0() -> bool:
    return not _distributed() or dist.get_rank() == 0


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer with a codebook of ``num_codes`` vectors of size ``code_dim``.

    Args:
        num_codes: codebook size K (>= 2).
        code_dim: code dimension D; the input's channel (4-D) or last dimension must equal it.
        beta: weight β of the commitment loss (>= 0, 0.25 in the VQ-VAE paper).
        ema: update the codebook by exponential moving averages instead of the codebook loss.
        decay: EMA decay γ in (0, 1).
        eps: Laplace smoothing of the EMA cluster sizes (> 0).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation (>= 1).
        kmeans_samples: at most this many vectors of the first batch are clustered.
        restart_after: restart a code unused for this many training steps (None: never).

    The codebook is the parameter ``codebook`` (K, D); with ``ema=True`` it does not require grad and
    changes only in training mode, under no_grad, in ``forward``. Buffers: ``ema_count`` (K) and
    ``ema_sum`` (K, D) (EMA statistics), ``usage`` (K, codes picked in training since ``reset_usage``,
    summed over processes), ``unused_steps`` (K), ``initialized`` (k-means done).
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        *,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        kmeans_samples: int = 16384,
        restart_after: int | None = 100,
    ) -> None:
        super().__init__()
        if int(num_codes) != num_codes or num_codes < 2:
            raise VaelabError(f"the codebook needs at least 2 codes (num_codes >= 2), got {num_codes}")
        if int(code_dim) != code_dim or code_dim < 1:
            raise VaelabError(f"code_dim must be a positive integer, got {code_dim}")
        if not (math.isfinite(beta) and beta >= 0):
            raise VaelabError(f"the commitment weight beta must be a finite number >= 0, got {beta}")
        if not (0 < decay < 1):
            raise VaelabError(f"the EMA decay must lie strictly between 0 and 1, got {decay}")
        if not (math.isfinite(eps) and eps > 0):
            raise VaelabError(f"the Laplace smoothing eps must be > 0, got {eps}")
        if kmeans_iters < 1 or kmeans_samples < 1:
            raise VaelabError(f"kmeans_iters and kmeans_samples must be >= 1, got {kmeans_iters} and {kmeans_samples}")
        if restart_after is not None and restart_after < 1:
            raise VaelabError(f"restart_after must be >= 1 step (or None to never restart), got {restart_after}")
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)
        self.beta, self.ema, self.decay, self.eps = float(beta), bool(ema), float(decay), float(eps)
        self.kmeans_init, self.kmeans_iters, self.kmeans_samples = bool(kmeans_init), kmeans_iters, kmeans_samples
        self.restart_after = restart_after

        codebook = torch.empty(self.num_codes, self.code_dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)
        self.codebook = nn.Parameter(codebook, requires_grad=not self.ema)
        self.register_buffer("ema_count", torch.ones(self.num_codes))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("usage", torch.zeros(self.num_codes))
        self.register_buffer("unused_steps", torch.zeros(self.num_codes, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}, "
            f"decay={self.decay}, restart_after={self.restart_after}"
        )

    # ----------------------------------------------------------------------------------------- shapes

    def _flatten(self, z: Tensor) -> tuple[Tensor, bool]:
        if not torch.is_floating_point(z):
            raise VaelabError(f"the quantizer's input must be a floating-point tensor, got {z.dtype}")
        if z.dim() < 2:
            raise VaelabError(f"the quantizer's input must be (B, D, H, W) or (..., D), got shape {tuple(z.shape)}")
        channels_first = z.dim() == 4
        d = z.shape[1] if channels_first else z.shape[-1]
        if d != self.code_dim:
            where = "channel dimension (dim 1 of a 4-D input)" if channels_first else "last dimension"
            raise VaelabError(
                f"the input's {where} is {d}, but the codebook's code_dim is {self.code_dim}: "
                "make the encoder output code_dim channels"
            )
        if z.numel() == 0:
            raise VaelabError("the quantizer's input is empty")
        moved = z.movedim(1, -1) if channels_first else z
        return moved.reshape(-1, self.code_dim), channels_first

    # ------------------------------------------------------------------------------------------ lookup

    def distances(self, flat: Tensor) -> Tensor:
        """Squared distances (N, K) of the rows of ``flat`` (N, D) to every code, in fp32."""
        return squared_distances(flat, self.codebook.detach())

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """The code indices of z (no gradient, no codebook update): z's shape without the code dimension."""
        flat, channels_first = self._flatten(z)
        codes = self.distances(flat).argmin(1)
        shape = (z.shape[0], *z.shape[2:]) if channels_first else z.shape[:-1]
        return codes.view(shape)

    def lookup(self, codes: Tensor, channels_first: bool = True) -> Tensor:
        """The code vectors of integer ``codes``: (B, H, W) -> (B, D, H, W) when ``channels_first`` and
        ``codes`` is 3-D, else (..., D)."""
        if codes.dtype not in (torch.int64, torch.int32):
            raise VaelabError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise VaelabError(f"codes must lie in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        e = F.embedding(codes.long(), self.codebook)
        return e.movedim(-1, 1) if channels_first and codes.dim() == 3 else e

    # ----------------------------------------------------------------------------------------- forward

    def forward(self, z: Tensor) -> QuantizerOutput:
        flat, channels_first = self._flatten(z)
        if self.training and not bool(self.initialized):
            self._kmeans_init(flat.detach())
        codes = self.distances(flat).argmin(1)
        e = F.embedding(codes, self.codebook)  # (N, D), a copy: later in-place codebook updates do not reach it
        batch = z.shape[0]
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = flat.float()
            losses = {"commitment": self.beta * (zf - e.detach().float()).pow(2).sum() / batch}
            if not self.ema:
                losses["codebook"] = (zf.detach() - e.float()).pow(2).sum() / batch
        quantized = flat + (e.detach().to(flat.dtype) - flat).detach()
        local_counts = torch.bincount(codes, minlength=self.num_codes).float()
        if self.training:
            self._update(flat.detach(), codes, local_counts)
        if channels_first:
            b, _, *spatial = z.shape
            quantized = quantized.view(b, *spatial, self.code_dim).movedim(-1, 1)
            codes = codes.view(b, *spatial)
        else:
            quantized = quantized.view(z.shape)
            codes = codes.view(z.shape[:-1])
        return QuantizerOutput(quantized, codes, losses, perplexity(local_counts))

    # ----------------------------------------------------------------------------------- codebook health

    @torch.no_grad()
    def _update(self, flat: Tensor, codes: Tensor, local_counts: Tensor) -> None:
        counts = local_counts.clone()
        if self.ema:
            sums = torch.zeros(self.num_codes, self.code_dim, device=flat.device, dtype=torch.float32)
            sums.index_add_(0, codes, flat.float())
            stats = _all_reduce(torch.cat([counts[:, None], sums], 1))
            counts, sums = stats[:, 0], stats[:, 1:]
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.data.copy_(self.ema_sum / smoothed[:, None])
        else:
            counts = _all_reduce(counts)
        self.usage.add_(counts)
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_after is not None:
            dead = (self.unused_steps >= self.restart_after).nonzero().flatten()
            if dead.numel():
                self._restart(dead, flat)

    @torch.no_grad()
    def _restart(self, dead: Tensor, flat: Tensor) -> None:
        """Replace the ``dead`` codes by random current encoder outputs, picked on rank 0 and broadcast."""
        picks = flat[torch.randint(flat.shape[0], (dead.numel(),), device=flat.device)].float()
        picks = _broadcast(picks.contiguous())
        self.codebook.data[dead] = picks.to(self.codebook.dtype)
        self.ema_sum[dead] = picks
        self.ema_count[dead] = 1.0
        self.unused_steps[dead] = 0

    @torch.no_grad()
    def _kmeans_init(self, flat: Tensor) -> None:
        """A few batched Lloyd iterations on (a sample of) this batch; rank 0's result is broadcast."""
        centroids = torch.zeros(self.num_codes, self.code_dim, device=flat.device)
        if _is_rank0():
            centroids = self._lloyd(flat.float())
        centroids = _broadcast(centroids.contiguous())
        self.codebook.data.copy_(centroids.to(self.codebook.dtype))
        # EMA statistics in their steady state: the global cluster sizes of this batch (at least 1, so that a
        # code left empty keeps its centroid), sums consistent with them
        counts = torch.bincount(squared_distances(flat, centroids).argmin(1), minlength=self.num_codes).float()
        counts = _all_reduce(counts).clamp_min_(1.0)
        self.ema_count.copy_(counts)
        self.ema_sum.copy_(centroids * counts[:, None])
        self.initialized.fill_(True)

    def _lloyd(self, x: Tensor) -> Tensor:
        """k-means++ seeding, then ``kmeans_iters`` batched Lloyd iterations on (a sample of) x (N, D)."""
        if x.shape[0] > self.kmeans_samples:
            x = x[torch.randperm(x.shape[0], device=x.device)[: self.kmeans_samples]]
        centroids = torch.empty(self.num_codes, self.code_dim, device=x.device)
        centroids[0] = x[torch.randint(x.shape[0], (1,), device=x.device)]
        closest = squared_distances(x, centroids[:1])[:, 0]
        for k in range(1, self.num_codes):  # each next seed drawn with probability ∝ squared distance
            weights = closest if closest.sum() > 0 else torch.ones_like(closest)
            centroids[k] = x[torch.multinomial(weights, 1)]
            closest = torch.minimum(closest, squared_distances(x, centroids[k : k + 1])[:, 0])
        for _ in range(self.kmeans_iters):
            assign = squared_distances(x, centroids).argmin(1)
            counts = torch.bincount(assign, minlength=self.num_codes).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None]  # empty clusters keep their centroid
        return centroids

    # --------------------------------------------------------------------------------------- reporting

    def usage_histogram(self) -> Tensor:
        """Codes picked per code in training since the last ``reset_usage`` (summed over processes)."""
        return self.usage.clone()

    def codebook_perplexity(self) -> Tensor:
        """Perplexity of ``usage_histogram()``: the effective number of codes in use."""
        return perplexity(self.usage)

    def codes_in_use(self) -> int:
        """How many codes were picked at least once since the last ``reset_usage``."""
        return int((self.usage > 0).sum())

    def reset_usage(self) -> None:
        """Start a new usage histogram (e.g. at each epoch)."""
        self.usage.zero_()
