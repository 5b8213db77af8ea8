"""PNG figures of a run: reconstructions beside inputs, samples from the prior, the learning curve."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from vaelab.data import Dataset
from vaelab.models import Model


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
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


def training_figures(run_dir: Path, model: Model, data: Dataset, n: int = 32) -> list[Path]:
    """The figures every run gets; image figures only when the data are images."""
    out = run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if len(data.shape) == 3:
        made.append(reconstructions(out / "reconstructions.png", model, data.test[:n]))
        if model.generative:
            torch.manual_seed(0)
            made.append(save_images(out / "samples.png", model.sample(64), "samples from the prior"))
    curve = learning_curve(out / "learning_curve.png", run_dir / "metrics.jsonl")
    return made + ([curve] if curve else [])
