"""Figures of a generative model's latent space: the 2-D manifold, codes by label, interpolations.

manifold.png       decode a grid of z over the central 90% of the prior's marginals (their 5%..95% quantiles), for 2-D
                   latents
latent_scatter.png posterior means of test points coloured by label; PCA to 2-D when the latent is larger
interpolation.png  decode (1 - t) mu(a) + t mu(b) between the codes of two test images, a and b at the ends
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.core.errors import VaelabError
from vaelab.data import Dataset
from vaelab.models.linear_gaussian import LinearGaussian
from vaelab.models.vae import VAE
from vaelab.viz.figures import save_figure, save_images
from vaelab.viz.registry import LATENT_FIGURES, RUN_FIGURES

QUANTILE_DRAWS = 100_000  # draws of a prior marginal without an inverse CDF, for its quantiles


def marginal_quantiles(marginals: Distribution, levels: Tensor) -> Tensor:
    """Quantiles (len(levels), D) of each unit's prior marginal: the inverse CDF where it has one (Gaussians), else
    the empirical quantiles of draws from a fixed seed (mixtures)."""
    levels = levels.to(marginals.mean.device)
    try:
        return marginals.icdf(levels[:, None].expand(-1, *marginals.batch_shape))
    except NotImplementedError:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            draws = marginals.sample((QUANTILE_DRAWS,))
        return torch.quantile(draws, levels, dim=0)


@torch.no_grad()
def manifold(path: Path, model: VAE, n: int = 20) -> Path:
    """Means of p(x|z) on an n x n grid over the prior's central 90%: z_1 grows to the right, z_2 upwards (Kingma &
    Welling 2014, figure 4)."""
    marginals = model.prior_marginals()
    if model.latent_size != 2 or marginals is None:
        raise VaelabError("the manifold figure needs a one-layer VAE with a 2-D latent (--latent-dim 2)")
    q = marginal_quantiles(marginals, torch.linspace(0.05, 0.95, n))  # (n, 2)
    z2, z1 = torch.meshgrid(q[:, 1].flip(0), q[:, 0], indexing="ij")
    images = model.decode(torch.stack([z1, z2], dim=-1).reshape(-1, 2)).mean
    return save_images(path, images, "decoded z grid, 5%..95% quantiles", ncol=n)


@torch.no_grad()
def latent_scatter(path: Path, model: VAE, x: Tensor, labels: Tensor | None = None) -> Path:
    """Posterior means of x in 2-D: the latent itself, or its first two principal components."""
    codes = model.code(x).float().cpu()
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        share = (s[:2] ** 2 / (s**2).sum()).tolist()
        xy, axes = centred @ v[:2].T, [f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2)]
    else:
        xy, axes = torch.cat([codes, torch.zeros(len(codes), 2 - codes.shape[1])], 1), ["z1", "z2"]
    fig, ax = plt.subplots(figsize=(6, 5))
    name = "label"
    if labels is not None and labels.dim() > 1:  # factor indices (dSprites): colour by the first factor
        labels, name = labels[:, 0], f"label (the first of {labels.shape[1]} columns)"
    colour = None if labels is None else labels.cpu().numpy()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10" if labels is not None else None, s=4, alpha=0.7)
    if labels is not None:
        fig.colorbar(points, ax=ax, label=name)
    ax.set(xlabel=axes[0], ylabel=axes[1], title=f"posterior means of {len(x)} test points ({codes.shape[1]}-D code)")
    return save_figure(fig, path)


@torch.no_grad()
def interpolation(path: Path, model: VAE, a: Tensor, b: Tensor, steps: int = 8) -> Path:
    """One row per pair (a_i, b_i): a_i, the decoded means along the line between their codes, b_i."""
    code_a, code_b = model.code(a), model.code(b)  # (n, D)
    t = torch.linspace(0, 1, steps, device=code_a.device)[:, None, None]
    between = model.decode((1 - t) * code_a + t * code_b).mean  # (steps, n, *shape)
    rows = torch.cat([a[None], between, b[None]]).transpose(0, 1).reshape(-1, *a.shape[1:])
    return save_images(path, rows, "a, decoded codes between, b", ncol=steps + 2)


@LATENT_FIGURES.register(VAE)
def latent_figures(out: Path, model: VAE, data: Dataset, n: int = 2000) -> list[Path]:
    """The figures above that fit the model and data (image figures need image data)."""
    pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0)).to(data.test.device)
    some = pick[:n]  # a random subset: some test sets are sorted by label
    labels = None if data.test_labels is None else data.test_labels[some]
    made = [latent_scatter(out / "latent_scatter.png", model, data.test[some], labels)]
    if len(data.shape) == 3:
        if model.latent_size == 2 and model.prior_marginals() is not None:
            made.append(manifold(out / "manifold.png", model))
        made.append(interpolation(out / "interpolation.png", model, data.test[pick[:4]], data.test[pick[4:8]]))
    return made


@RUN_FIGURES.register(VAE)
@torch.no_grad()
def vae_figures(out: Path, model: VAE, data: Dataset, metrics_file: Path) -> list[Path]:
    """Samples from the prior (images) and the latent figures."""
    made = []
    if len(data.shape) == 3:
        torch.manual_seed(0)
        made.append(save_images(out / "samples.png", model.sample(64), "samples from the prior"))
    return made + latent_figures(out, model, data)


# a linear-Gaussian model has the same latent space: a standard normal prior, posterior means, decoded means
LATENT_FIGURES.register(LinearGaussian)(latent_figures)
RUN_FIGURES.register(LinearGaussian)(vae_figures)
