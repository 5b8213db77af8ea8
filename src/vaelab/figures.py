"""PNG figures of a run: reconstructions beside inputs, samples from the prior, the learning curve.

Autoencoders also get their features drawn: first-layer filters as image tiles, code histograms, and
for denoising models clean / corrupted / restored triplets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from vaelab.corruption import Corruption
from vaelab.data import Dataset
from vaelab.models import Model


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write and close a figure (closing keeps long runs from accumulating figures)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grid(images: Tensor, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one (rows*H, ncol*W[, C]) array with a light border."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    nrow = -(-n // ncol)
    out = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        out[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = x[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)[..., :3]


def save_images(path: Path, images: Tensor, title: str, ncol: int = 8) -> Path:
    grid = image_grid(images, ncol)
    width = max(4.0, grid.shape[1] / 40)  # inches; small images are enlarged, large ones kept sharp
    fig, ax = plt.subplots(figsize=(width, width * grid.shape[0] / grid.shape[1] + 0.5))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


@torch.no_grad()
def reconstructions(path: Path, model: Model, x: Tensor, ncol: int = 8) -> Path:
    """Rows alternate: inputs, then their reconstructions (means of p(x|z))."""
    recon = model.reconstruct(x).reshape(x.shape)
    rows = [t for i in range(0, len(x), ncol) for t in (x[i : i + ncol], recon[i : i + ncol])]
    return save_images(path, torch.cat(rows), "inputs / reconstructions (row pairs)", ncol)


def filters(path: Path, weight: Tensor, shape: tuple[int, ...], title: str, n: int = 100) -> Path:
    """The first n rows of ``weight`` (units, prod(shape)) as images, each scaled to [0, 1] on its own."""
    w = weight.detach().float()[:n]
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    return save_images(path, ((w - lo) / (hi - lo).clamp_min(1e-12)).reshape(-1, *shape), title, ncol=10)


def filter_weights(model: Model, shape: tuple[int, ...]) -> dict[str, Tensor]:
    """Weights that touch the pixels, one row per unit: the encoder's first layer and the decoder's last (MLPs)."""
    d = math.prod(shape)
    first = next((m for m in model.encoder.modules() if isinstance(m, nn.Linear)), None)
    last = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)][-1:]
    found = {}
    if first is not None and first.in_features == d:
        found["encoder"] = first.weight
    if last and last[0].out_features == d:
        found["decoder"] = last[0].weight.T
    return found


@torch.no_grad()
def denoising(path: Path, model: Model, x: Tensor, corruption: Corruption, ncol: int = 8) -> Path:
    """Row triples: clean inputs, corrupted inputs x̃ ~ M(x̃|x), and their restorations (means of p(x|f(x̃)))."""
    x_tilde = corruption.sample(x)
    restored = model.reconstruct(x_tilde).reshape(x.shape)
    rows = [t for i in range(0, len(x), ncol) for t in (x[i : i + ncol], x_tilde[i : i + ncol], restored[i : i + ncol])]
    return save_images(path, torch.cat(rows), "clean / corrupted / restored (row triples)", ncol)


def code_histogram(path: Path, codes: Tensor) -> Path:
    """Left: every code value h_j(x); right: the mean activation of each unit over the examples."""
    h = codes.detach().float().flatten(1).cpu().numpy()
    fig, (values, means) = plt.subplots(1, 2, figsize=(9, 3.5))
    values.hist(h.ravel(), bins=100, log=True)
    values.set(title=f"code values ({h.shape[0]} test examples)", xlabel="h_j(x)", ylabel="count")
    means.hist(h.mean(0), bins=50)
    means.set(title=f"mean activation of each of {h.shape[1]} units", xlabel="mean over examples", ylabel="units")
    return save_figure(fig, path)


@torch.no_grad()
def feature_figures(out: Path, model: Model, data: Dataset, n: int = 32) -> list[Path]:
    """Filters, the code histogram and denoising triplets (for models with a ``corruption``)."""
    made = [code_histogram(out / "code_histogram.png", model.code(data.test[:1000]))]
    if len(data.shape) == 3:
        for side, weight in filter_weights(model, data.shape).items():
            made.append(filters(out / f"{side}_filters.png", weight, data.shape, f"{side} filters (weights of pixels)"))
        corruption = getattr(model, "corruption", None)
        if isinstance(corruption, Corruption):
            torch.manual_seed(0)
            made.append(denoising(out / "denoising.png", model, data.test[: n // 2], corruption))
    return made


def learning_curve(path: Path, metrics_file: Path) -> Path | None:
    if not metrics_file.exists():
        return None
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        rs = [r for r in records if r.get("split") == split and "loss" in r]
        if rs:
            ax.plot([r["step"] for r in rs], [r["loss"] for r in rs], style, label=f"{split} loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per data point)")
    ax.set_title("learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_figures(run_dir: Path, model: Model, data: Dataset, n: int = 32) -> list[Path]:
    """The figures every run gets; image figures only when the data are images."""
    out = run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    own = model.figures(out, data)  # a model that draws its own (sequence models: rollouts), else the defaults
    if own is not None:
        curve = learning_curve(out / "learning_curve.png", run_dir / "metrics.jsonl")
        return own + ([curve] if curve else [])
    made = []
    if len(data.shape) == 3:
        made.append(reconstructions(out / "reconstructions.png", model, data.test[:n]))
        if model.generative:
            torch.manual_seed(0)
            made.append(save_images(out / "samples.png", model.sample(64), "samples from the prior"))
    if not model.generative:  # an autoencoder: its features are the point
        made += feature_figures(out, model, data, n)
    else:  # a generative model: its latent space
        from vaelab.latent_figures import latent_figures

        made += latent_figures(out, model, data)
    curve = learning_curve(out / "learning_curve.png", run_dir / "metrics.jsonl")
    return made + ([curve] if curve else [])
