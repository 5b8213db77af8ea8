"""Figures of VQ runs: reconstructions per level, the codebook usage histogram, samples from the learned prior."""

from __future__ import annotations

from pathlib import Path

import torch

from vaelab.data import Dataset
from vaelab.models.vqvae import VQVAE2, VQModel
from vaelab.nn import perplexity
from vaelab.viz.figures import plt, save_figure, save_images
from vaelab.viz.registry import RUN_FIGURES


@torch.no_grad()
def level_reconstructions(path: Path, model: VQVAE2, x: torch.Tensor, ncol: int = 8) -> Path:
    """Row groups: inputs, both levels, top level only (bottom vectors zero), bottom level only (top zero)."""
    levels = model.reconstruct_levels(x)
    shape = x.shape
    rows = [
        t
        for i in range(0, len(x), ncol)
        for t in (x[i : i + ncol], *(levels[k].reshape(shape)[i : i + ncol] for k in ("both", "top", "bottom")))
    ]
    return save_images(path, torch.cat(rows), "input / both / top only / bottom only", ncol)


@torch.no_grad()
def codebook_histogram(path: Path, model: VQModel, x: torch.Tensor, batch_size: int = 500) -> Path:
    """How often each code is picked on x, codes sorted by frequency, one panel per level."""
    levels = list(model.quantizers())
    counts = [torch.zeros(q.num_codes) for q in model.quantizers().values()]
    for i in range(0, len(x), batch_size):
        for level, c in enumerate(model.codes(x[i : i + batch_size])):
            counts[level] += torch.bincount(c.flatten().cpu(), minlength=len(counts[level])).float()
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.5), squeeze=False)

    for ax, level, n in zip(axes[0], levels, counts):
        ax.bar(range(len(n)), n.sort(descending=True).values.numpy(), width=1.0)
        used = int((n > 0).sum())
        name = f"{level} level: " if level else ""
        ax.set(
            title=f"{name}{used}/{len(n)} codes used, perplexity {float(perplexity(n)):.1f}",
            xlabel="code (sorted by use)",
            ylabel=f"picks on {len(x)} test images",
        )
    return save_figure(fig, path)


@torch.no_grad()
def prior_samples(path: Path, model: VQModel, n: int = 64) -> Path:
    return save_images(path, model.sample(n).reshape(n, *model.data_shape), f"{n} samples from the learned prior")


@RUN_FIGURES.register(VQModel)
def vq_figures(out: Path, model: VQModel, data: Dataset, metrics_file: Path) -> list[Path]:
    """Codebook usage on the test images, and samples once a prior is attached."""
    made = [codebook_histogram(out / "codebook_usage.png", model, data.test[:2000])]
    if model.code_prior is not None:
        torch.manual_seed(0)
        made.append(prior_samples(out / "prior_samples.png", model))
    return made


@RUN_FIGURES.register(VQVAE2)
def vq2_figures(out: Path, model: VQVAE2, data: Dataset, metrics_file: Path) -> list[Path]:
    """Reconstructions from each level alone."""
    return [level_reconstructions(out / "reconstruction_levels.png", model, data.test[:32])]
