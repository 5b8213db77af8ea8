"""A sweep's figures: one per metric, every group of runs (a point of the grid) on the x axis, each seed's value as a
dot and the mean ± standard deviation over the seeds as a bar."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from vaelab.viz.figures import save_figure


def metric_figure(path: Path, metric: str, groups: Sequence[str], values: Sequence[dict[int, float]]) -> Path:
    """Draw ``metric`` over the sweep's groups (``values[i]``: seed -> value of group ``groups[i]``) into ``path``."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) + 2), 3.4))
    for i, by_seed in enumerate(values):
        ys = list(by_seed.values())
        if not ys:
            continue
        ax.scatter([i] * len(ys), ys, s=14, color="tab:blue", alpha=0.6, zorder=3)
        mean = sum(ys) / len(ys)
        sd = (sum((y - mean) ** 2 for y in ys) / (len(ys) - 1)) ** 0.5 if len(ys) > 1 else 0.0
        ax.errorbar([i], [mean], yerr=[sd], fmt="_", color="black", markersize=18, capsize=4, zorder=4)
    ax.set_xticks(
        range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center"
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: seeds (dots), mean ± sd (bars)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def figure_name(metric: str) -> str:
    """A file name for a metric's figure (``eval/nll`` -> ``eval_nll.png``)."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", metric) + ".png"
