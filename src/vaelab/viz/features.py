"""Figures of the autoencoders' features: first-layer filters as image tiles, the code histogram, and for denoising
models clean / corrupted / restored triplets."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from vaelab.data import Dataset
from vaelab.models.ae import AutoEncoder
from vaelab.models.dae import DenoisingAutoEncoder
from vaelab.probability import Corruption
from vaelab.viz.figures import plt, save_figure, save_images
from vaelab.viz.registry import RUN_FIGURES


def filters(path: Path, weight: Tensor, shape: tuple[int, ...], title: str, n: int = 100) -> Path:
    """The first n rows of ``weight`` (units, prod(shape)) as images, each scaled to [0, 1] on its own."""
    w = weight.detach().float()[:n]
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    return save_images(path, ((w - lo) / (hi - lo).clamp_min(1e-12)).reshape(-1, *shape), title, ncol=10)


def filter_weights(model: AutoEncoder, shape: tuple[int, ...]) -> dict[str, Tensor]:
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
def denoising(path: Path, model: AutoEncoder, x: Tensor, corruption: Corruption, ncol: int = 8) -> Path:
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
@RUN_FIGURES.register(AutoEncoder)
@torch.no_grad()
def feature_figures(out: Path, model: AutoEncoder, data: Dataset, metrics_file: Path) -> list[Path]:
    """The code histogram and, for images, the filters that touch the pixels."""
    made = [code_histogram(out / "code_histogram.png", model.code(data.test[:1000]))]
    if len(data.shape) == 3:
        for side, weight in filter_weights(model, data.shape).items():
            made.append(filters(out / f"{side}_filters.png", weight, data.shape, f"{side} filters (weights of pixels)"))
    return made


@RUN_FIGURES.register(DenoisingAutoEncoder)
@torch.no_grad()
def denoising_figure(out: Path, model: DenoisingAutoEncoder, data: Dataset, metrics_file: Path) -> list[Path]:
    if len(data.shape) != 3:
        return []
    torch.manual_seed(0)
    return [denoising(out / "denoising.png", model, data.test[:16], model.corruption)]
