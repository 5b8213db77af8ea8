"""Figures of a sequence model: observed frames, then imagined futures beside the ground truth.

rollout.png   image sequences, per test sequence the rows: the ground truth; one sampled rollout with jumps of one
              frame; one with jumps of max_jump frames (its landings only); the predictive mean of each horizon
              (what ``vaelab predict`` scores). A line marks the last observed frame.
              Vector sequences (the oscillator): the observed values, the truth ahead, sampled rollouts and the
              predictive mean, one panel per sequence (first dimension).
rollout.gif   image sequences: truth (top) and the jumps-of-one rollout (bottom) frame by frame; imagined frames
              have a grey border.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaelab.data import Dataset
from vaelab.models.tdvae import TDVAE, plan_jumps
from vaelab.viz.figures import image_grid
from vaelab.viz.registry import RUN_FIGURES

SAMPLES = 16  # imagined futures averaged into the predictive mean


def default_window(model: TDVAE, frames: int) -> tuple[int, int]:
    """(context, horizon): up to two of the longest jumps ahead, the rest observed."""
    horizon = max(1, min(frames - 1, 2 * model.config.max_jump))
    return frames - horizon, horizon


@torch.no_grad()
def futures(model: TDVAE, x: Tensor, context: int, horizon: int) -> dict[str, Tensor]:
    """Frames after the context, (B, horizon, *frame) each: one rollout of unit jumps, one of max_jump jumps (NaN
    between its landings), and the predictive mean of every horizon over SAMPLES futures; also SAMPLES unit rollouts."""
    d = model.config.max_jump
    belief = model.beliefs(x[:, :context])[:, -1]
    ones = model.decode(model.imagine(belief, [1] * horizon, SAMPLES)).mean  # (S, B, H, *frame)
    long_jumps = torch.full_like(ones[0], float("nan"))
    jumps = plan_jumps(horizon, d)
    landings = torch.as_tensor(np.cumsum(jumps) - 1, device=long_jumps.device)
    long_jumps[:, landings] = model.decode(model.imagine(belief, jumps, 1)[0]).mean
    mean = torch.stack([predictive_mean(model, belief, h) for h in range(1, horizon + 1)], 1)
    return {"ones": ones[0], "long": long_jumps, "mean": mean, "all_ones": ones}


def predictive_mean(model: TDVAE, belief: Tensor, horizon: int) -> Tensor:
    """(1/S) sum_s mean p_D(x|z_h^s), z_h reached by the fewest jumps: (B, *frame)."""
    states = model.imagine(belief, plan_jumps(horizon, model.config.max_jump), SAMPLES)[:, :, -1]
    return model.decode(states).mean.mean(0)


def rollout_figures(
    out: Path, model: TDVAE, x: Tensor, context: int | None = None, horizon: int | None = None
) -> list[Path]:
    """rollout.png (and rollout.gif for images) for the sequences x (B, T, *frame) into the folder ``out``."""
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    if context is None or horizon is None:
        context, horizon = default_window(model, x.shape[1])
    x = x[:, : context + horizon]
    torch.manual_seed(0)
    f = futures(model, x, context, horizon)
    if len(model.frame_shape) == 3:
        return [
            rollout_strip(out / "rollout.png", model, x, context, f),
            rollout_gif(out / "rollout.gif", x, context, f),
        ]
    return [rollout_lines(out / "rollout.png", model, x, context, f)]


def rollout_strip(path: Path, model: TDVAE, x: Tensor, context: int, f: dict[str, Tensor]) -> Path:
    observed = x[:, :context]
    d = model.config.max_jump
    rows = {
        "truth": x,
        "jumps of 1": torch.cat([observed, f["ones"]], 1),
        f"jumps of {d}": torch.cat([observed, f["long"]], 1),
        f"mean of {SAMPLES}": torch.cat([observed, f["mean"]], 1),
    }
    if d == 1:
        del rows["jumps of 1"]
    tiles = torch.stack(list(rows.values()), 1)  # (B, rows, T, *frame)
    frames = x.shape[1]
    blank = torch.isnan(tiles)
    tiles = tiles.nan_to_num(0.0)
    tiles[blank] = 0.85  # a frame a jumpy rollout steps over
    grid = image_grid(tiles.reshape(-1, *tiles.shape[3:]), ncol=frames)
    labels = list(rows) * len(x)
    h, w = tiles.shape[-2:]
    fig, ax = plt.subplots(figsize=(max(6.0, frames * 0.5), 0.5 * len(labels) + 0.8))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axvline(context * (w + 1) + 0.5, color="tab:red", linewidth=1)
    ax.set_yticks([1 + (h + 1) * i + h / 2 for i in range(len(labels))], labels, fontsize=7)
    ax.set_xticks([1 + (w + 1) * t + w / 2 for t in range(frames)], [str(t) for t in range(frames)], fontsize=6)
    ax.set_title(f"observed frames 0..{context - 1}, then imagined (red line: last observed frame)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def rollout_gif(path: Path, x: Tensor, context: int, f: dict[str, Tensor], scale: int = 4) -> Path:
    truth = x.float().clamp(0, 1).cpu()
    imagined = torch.cat([x[:, :context], f["ones"]], 1).float().clamp(0, 1).cpu()
    pictures = []
    for t in range(x.shape[1]):
        bottom = imagined[:, t].clone()
        if t >= context:  # a grey border marks an imagined frame
            bottom[..., 0, :] = bottom[..., -1, :] = bottom[..., :, 0] = bottom[..., :, -1] = 0.5
        grid = image_grid(torch.cat([truth[:, t], bottom]), ncol=len(x), pad=2)
        pixels = (np.clip(grid, 0, 1) * 255).astype(np.uint8)
        pictures.append(
            Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
        )
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=250, loop=0)
    return path


def rollout_lines(path: Path, model: TDVAE, x: Tensor, context: int, f: dict[str, Tensor]) -> Path:
    frames = x.shape[1]
    t_obs, t_future = np.arange(context), np.arange(context, frames)
    fig, axes = plt.subplots(len(x), 1, figsize=(8, 2.2 * len(x)), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        series = x[i, :, 0].cpu().numpy()
        ax.plot(t_obs, series[:context], "k.", label="observed")
        ax.plot(t_future, series[context:], ".", color="0.6", label="truth (not seen)")
        for s in range(min(5, f["all_ones"].shape[0])):
            ax.plot(t_future, f["all_ones"][s, i, :, 0].cpu().numpy(), "-", color="tab:blue", alpha=0.3, lw=0.8)
        long = f["long"][i, :, 0].cpu().numpy()
        ax.plot(t_future, long, "s", color="tab:orange", label=f"jumps of {model.config.max_jump}")
        ax.plot(t_future, f["mean"][i, :, 0].cpu().numpy(), "-", color="tab:red", lw=1.5, label=f"mean of {SAMPLES}")
        ax.axvline(context - 0.5, color="0.3", lw=0.8, ls="--")
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[0, 0].set_title("observed, then imagined futures (blue: sampled unit-jump rollouts)", fontsize=9)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@RUN_FIGURES.register(TDVAE)
def tdvae_figures(out: Path, model: TDVAE, data: Dataset, metrics_file: Path) -> list[Path]:
    """Rollouts of the first four test sequences."""
    return rollout_figures(out, model, data.test[:4])
