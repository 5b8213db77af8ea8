"""The figures every run can have: image grids, reconstructions beside inputs, the learning curve; and
``training_figures``, which draws what is registered for a model's type (``viz.registry.RUN_FIGURES``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import atomic_write
from vaelab.data import Dataset
from vaelab.models import LikelihoodModel, Model
from vaelab.viz.registry import RUN_FIGURES


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


def save_samples(path: Path | None, folder: Path, samples: Tensor) -> Path:
    """Samples as a PNG grid when they are images (default FOLDER/samples.png), else as an array in a .npy file
    (default FOLDER/samples.npy: vectors have no picture)."""
    images = samples.dim() == 4
    if path is None:
        path = Path(folder) / ("samples.png" if images else "samples.npy")
    if images:
        return save_images(path, samples, f"{len(samples)} samples from the prior")
    if path.suffix != ".npy":
        raise VaelabError(
            f"samples of shape {tuple(samples.shape[1:])} are not images: they are written as a NumPy array; give "
            f"--out {path.with_suffix('.npy')}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    array = samples.detach().float().cpu().numpy()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, array)

    atomic_write(path, write)
    return path


@torch.no_grad()
def reconstructions(path: Path, model: Model, x: Tensor, ncol: int = 8) -> Path:
    """Rows alternate: inputs, then their reconstructions (means of p(x|z))."""
    recon = model.reconstruct(x).reshape(x.shape)
    rows = [t for i in range(0, len(x), ncol) for t in (x[i : i + ncol], recon[i : i + ncol])]
    return save_images(path, torch.cat(rows), "inputs / reconstructions (row pairs)", ncol)


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


def training_figures(run_dir: Path, model: Model, data: Dataset) -> list[Path]:
    """The figures of a finished run, into RUN/figures: those registered for the model's type, the learning curve."""
    out = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = Path(run_dir) / "metrics.jsonl"
    made: list[Path] = []
    for draw in RUN_FIGURES.all(model):
        made += draw(out, model, data, metrics_file)
    curve = learning_curve(out / "learning_curve.png", metrics_file)
    return made + ([curve] if curve else [])


@RUN_FIGURES.register(LikelihoodModel)
def reconstruction_figure(out: Path, model: LikelihoodModel, data: Dataset, metrics_file: Path) -> list[Path]:
    """Inputs beside their reconstructions, for image data."""
    if len(data.shape) != 3:
        return []
    return [reconstructions(out / "reconstructions.png", model, data.test[:32])]
