"""Figures of the β-VAE family: latent traversals (PNG and animated GIF), KL per unit over training, reconstructions.

traversals.png     one row per latent unit, sorted by its KL (largest first, the KL in the row label): unit j of the
                   posterior mean mu(x) of one test image is swept over mu_j + t sigma_j, t in [-3, 3], sigma_j the
                   standard deviation of the prior's marginal p(z_j) (1 for N(0, I)), the other units held at mu(x),
                   and decoded (means of p(x|z))
traversals.gif     the same sweep animated (t goes -3 -> 3 -> -3), every unit at once, units in the same order
kl_per_unit.png    KL(q(z_j|x) || p(z_j)) of each unit after every epoch (metrics.jsonl, split "epoch"), with the
                   capacity C of the annealed model when it has one
``vaelab traverse RUN`` draws them for a trained VAE; training draws them for the beta-VAE family.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.data import Dataset
from vaelab.eval.latents import kl_per_unit
from vaelab.models.betavae import BetaVAE
from vaelab.models.vae import VAE
from vaelab.viz.figures import image_grid, save_figure
from vaelab.viz.registry import RUN_FIGURES, TRAVERSAL_FIGURES

SPAN = 3.0  # traversal half-width in prior standard deviations
STEPS = 9  # columns of the traversal figure
GIF_FRAMES = 24  # frames of one sweep -span -> span; the GIF goes there and back


def _check(model: VAE) -> None:
    if model.prior_marginals() is None:
        raise VaelabError("latent traversals need a VAE with one stochastic layer (inner_latent_dim=0)")


@torch.no_grad()
def traverse(model: VAE, x: Tensor, values: Tensor) -> Tensor:
    """Decoded traversals around one image x (C, H, W): (D, len(values), C, H, W), row j sweeps mu_j + values
    sigma_j, sigma_j the standard deviation of the prior's marginal of unit j."""
    _check(model)
    mu = model.code(x.unsqueeze(0))[0]
    sigma = model.prior_marginals().stddev.to(mu)
    d, n = mu.shape[0], len(values)
    z = mu.repeat(d, n, 1)  # (D, n, D)
    idx = torch.arange(d, device=mu.device)
    z[idx, :, idx] = mu[:, None] + values.to(mu)[None, :] * sigma[:, None]
    return model.decode(z.reshape(d * n, d)).mean.reshape(d, n, *x.shape)


def _order(kl: Tensor) -> list[int]:
    return [int(j) for j in torch.argsort(kl.cpu(), descending=True)]


def traversal_figure(path: Path, model: VAE, x: Tensor, kl: Tensor, steps: int = STEPS, span: float = SPAN) -> Path:
    """The traversal grid: rows = units sorted by KL (labelled), columns = mu_j - span .. mu_j + span."""
    values = torch.linspace(-span, span, steps)
    images = traverse(model, x, values)
    order = _order(kl)
    grid = image_grid(images[order].reshape(-1, *x.shape), ncol=steps)
    h = x.shape[-2] + 1
    width = max(5.0, grid.shape[1] / 30)
    fig, ax = plt.subplots(figsize=(width + 1.2, width * grid.shape[0] / grid.shape[1] + 0.6))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([1 + h * r + h / 2 for r in range(len(order))])
    ax.set_yticklabels([f"z{j}  KL {float(kl[j]):.2f}" for j in order], fontsize=8)
    w = x.shape[-1] + 1
    ax.set_xticks([1 + w * c + w / 2 for c in range(steps)])
    ax.set_xticklabels([f"{float(v):+.1f}" for v in values], fontsize=7)
    ax.set_xlabel("offset from the posterior mean (standard deviations of the prior's marginal)")
    ax.set_title("latent traversals, units sorted by KL (nats)")
    for side in ax.spines.values():
        side.set_visible(False)
    return save_figure(fig, path)


def traversal_gif(path: Path, model: VAE, x: Tensor, kl: Tensor, frames: int = GIF_FRAMES, span: float = SPAN) -> Path:
    """Animated traversal: frame t decodes, for each unit j (sorted by KL), mu with mu_j + t; t sweeps to and fro."""
    values = torch.linspace(-span, span, frames)
    images = traverse(model, x, values)[_order(kl)]  # (D, frames, C, H, W)
    scale = max(1, 96 // x.shape[-1])  # small sprites are enlarged
    ncol = min(len(images), 5)
    pictures = []
    for t in [*range(frames), *range(frames - 2, 0, -1)]:
        grid = (image_grid(images[:, t], ncol=ncol) * 255).astype(np.uint8)
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
        pictures.append(Image.fromarray(grid))
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=80, loop=0)
    return path


def kl_curve(path: Path, metrics_file: Path) -> Path | None:
    """KL per unit after every epoch (records of split "epoch" with ``kl_per_unit``); None when there are none."""
    if not metrics_file.exists():
        return None
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    records = [r for r in records if r.get("split") == "epoch" and "kl_per_unit" in r]
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    kl = np.array([r["kl_per_unit"] for r in records])  # (epochs, D)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j in np.argsort(-kl[-1]):
        ax.plot(epochs, kl[:, j], "o-", markersize=3, label=f"z{j}")
    if all("capacity" in r for r in records):
        ax.plot(epochs, kl.sum(1), "k-", lw=2, label="total KL")
        ax.plot(epochs, [r["capacity"] for r in records], "k--", lw=1.5, label="capacity C")
    ax.set(xlabel="epoch", ylabel="KL(q(z_j|x) || p(z_j)), nats", title="KL per latent unit over training (val batch)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return save_figure(fig, path)


@TRAVERSAL_FIGURES.register(VAE)
@torch.no_grad()
def traversal_figures(
    out: Path, model: VAE, data: Dataset, metrics_file: Path | None = None, index: int = 0
) -> list[Path]:
    """Traversals (PNG + GIF) around test image ``index`` (traversals.png, or traversals-INDEX.png for another image
    than the first), and the KL per unit over training when it was logged."""
    _check(model)
    if len(data.shape) != 3:
        raise VaelabError(f"latent traversals draw images; {data.name} holds data of shape {data.shape}")
    if not 0 <= index < len(data.test):
        raise VaelabError(f"image index {index} out of range: the test split has {len(data.test)} images")
    kl = kl_per_unit(model, data.test[:500])
    stem = "traversals" if index == 0 else f"traversals-{index}"
    made = [traversal_figure(out / f"{stem}.png", model, data.test[index], kl)]
    made.append(traversal_gif(out / f"{stem}.gif", model, data.test[index], kl))
    curve = kl_curve(out / "kl_per_unit.png", metrics_file) if metrics_file is not None else None
    return made + ([curve] if curve else [])


@RUN_FIGURES.register(BetaVAE)
def beta_vae_figures(out: Path, model: BetaVAE, data: Dataset, metrics_file: Path) -> list[Path]:
    """The beta-VAE family's runs draw their traversals (images only)."""
    if len(data.shape) != 3 or model.prior_marginals() is None:
        return []
    return traversal_figures(out, model, data, metrics_file)
