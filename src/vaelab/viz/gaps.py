"""The figure of ``vaelab gaps``: per test point, the inference gap split into its approximation and amortization
parts (stacked, points sorted by the whole gap), and the means with their standard errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from vaelab.viz.figures import save_figure
from vaelab.viz.registry import REPORT_FIGURES


@REPORT_FIGURES.register("gaps", "the inference gap per test point, split into approximation and amortization")
def gaps_figure(out: Path, report: dict[str, Any]) -> list[Path]:
    """figures/gaps.png from a gaps.json report."""
    approximation = np.array(report["approximation_gap"]["points"])
    amortization = np.array(report["amortization_gap"]["points"])
    order = np.argsort(approximation + amortization)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    index = np.arange(len(order))
    left.bar(index, approximation[order], width=1.0, label="approximation gap", color="tab:blue")
    left.bar(
        index, amortization[order], width=1.0, bottom=approximation[order], label="amortization gap", color="tab:orange"
    )
    left.set(
        xlabel="test point (sorted by the inference gap)",
        ylabel="nats",
        title=f"log p(x) - ELBO per point ({report['log_px_method']} log p(x))",
    )
    left.legend()
    names = [
        ("log p(x) - IWAE_K", None),
        ("approximation", "approximation_gap"),
        ("amortization", "amortization_gap"),
        ("inference gap", "inference_gap"),
    ]
    means, errors = [], []
    for _, key in names:
        if key is None:
            log_px, iwae = report["log_px"], report["iwae"]
            diff = np.array(log_px["points"]) - np.array(iwae["points"])
            means.append(diff.mean())
            errors.append(diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0)
        else:
            means.append(report[key]["mean"])
            errors.append(report[key]["stderr"])
    right.barh(
        [label.replace("IWAE_K", f"IWAE_{report['k']}") for label, _ in names],
        means,
        xerr=errors,
        color=["tab:gray", "tab:blue", "tab:orange", "tab:green"],
    )
    right.invert_yaxis()
    right.set(xlabel="nats (mean ± standard error)", title=f"{report['points']} {report.get('split', '')} points")
    return [save_figure(fig, Path(out) / "gaps.png")]
