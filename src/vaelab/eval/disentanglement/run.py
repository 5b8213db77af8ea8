"""Several metrics with one seed (``all_metrics``), and the metrics of a trained run (``run_disentanglement``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.data import resolve_data_dir
from vaelab.data.factors import factor_source
from vaelab.eval.disentanglement.base import METRICS, Encoder, check_source, select_factors
from vaelab.runs import Run, data_now, report_name

#: the metrics in the order they are reported
ORDER = ("betavae", "factorvae", "mig", "dci", "sap")

#: sample sizes of ``vaelab disentanglement --quick``: about a tenth of the defaults (for tests and first looks)
QUICK_SIZES: dict[str, dict[str, int]] = {
    "betavae": {"num_train": 1000, "num_eval": 500},
    "factorvae": {"num_train": 1000, "num_eval": 500, "num_variance_estimate": 2000},
    "mig": {"num_samples": 2000},
    "dci": {"num_train": 2000, "num_test": 1000},
    "sap": {"num_train": 2000, "num_test": 1000},
}


def ordered(names: Sequence[str]) -> list[str]:
    known = [m for m in ORDER if m in names]
    return known + sorted(set(names) - set(known))


def all_metrics(
    source: Any,
    encode: Encoder,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    factors: Sequence[str] | None = None,
    **sizes: dict[str, Any],
) -> dict[str, float]:
    """The chosen metrics (default all) with a fixed seed, flattened as ``<metric>/<key>``; ``sizes`` maps a metric
    to its keyword arguments (sample sizes). Each metric starts from the same seed, so one's result does not depend
    on which others ran."""
    check_source(source)
    chosen = METRICS.names() if metrics is None else list(metrics)
    unknown = sorted((set(sizes) | set(chosen)) - set(METRICS.names()))
    if unknown:
        raise VaelabError(f"unknown metric {unknown[0]!r}; the metrics are: {', '.join(ordered(METRICS.names()))}")
    select_factors(source, factors)  # an unknown factor fails before any metric runs
    out: dict[str, float] = {}
    with Progress(len(chosen), "disentanglement", "metrics") as progress:
        for name in ordered(chosen):
            progress.status(f"computing {name}")
            metric = METRICS.get(name)
            for key, value in metric(source, encode, seed=seed, factors=factors, **sizes.get(name, {})).items():
                out[key if key.startswith(name) else f"{name}/{key}"] = value
            progress.advance()
    return out


#: the headline score of each metric, as tables show them: (column, key in a report's ``scores``)
HEADLINE_SCORES = (
    ("BetaVAE", "betavae/eval_accuracy"),
    ("FactorVAE", "factorvae/eval_accuracy"),
    ("MIG", "mig"),
    ("DCI dis.", "dci/disentanglement"),
    ("DCI compl.", "dci/completeness"),
    ("DCI info.", "dci/informativeness_test"),
    ("SAP", "sap"),
)


def run_disentanglement(
    run: Run,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    factors: Sequence[str] | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    quick: bool = False,
    sizes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metrics of a loaded run on the factor source of its data set, codes = the model's deterministic code (a
    VAE's posterior mean). Written as RUN/disentanglement-SETTINGS.json (``disentanglement_report_name``); returns:
    {"seed", "factors", "metrics", "scores": {...}}. ``sizes`` (metric -> keyword arguments) overrides the sample
    sizes (of ``--quick`` or the defaults), metric by metric."""
    source = factor_source(run.config.data.name, resolve_data_dir(data_now(run.config.data, data_dir).data_dir))
    chosen = select_factors(source, factors)
    shape = run.model.data_shape
    rendered = tuple(source.render(source.sample_factors(1, np.random.default_rng(0))).shape[1:])
    if rendered != shape:
        raise VaelabError(f"the factor source draws images of shape {rendered}, the run was trained on {shape}")
    model = run.model.to(device).eval()

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:  # in chunks of 256: larger batches run slower on a CPU
        x = torch.from_numpy(images).to(device)
        return torch.cat([model.code(x[i : i + 256]).float() for i in range(0, len(x), 256)]).cpu().numpy()

    sizes = {m: {**(QUICK_SIZES.get(m, {}) if quick else {}), **(sizes or {}).get(m, {})} for m in METRICS.names()}
    names = METRICS.names() if metrics is None else list(metrics)
    scores = all_metrics(
        source, encode, seed, metrics=names, factors=factors, **{m: sizes[m] for m in names if m in sizes}
    )
    entry = {
        "seed": seed,
        "factors": [source.factor_names[k] for k in chosen],
        "metrics": ordered(names),
        "quick": quick,
        "scores": scores,
    }
    command = " ".join(
        [f"vaelab disentanglement {run.path}", f"--seed {seed}", *(["--quick"] if quick else [])]
        + ([f"--metrics {','.join(entry['metrics'])}"] if metrics is not None else [])
        + ([f"--factors {','.join(entry['factors'])}"] if factors is not None else [])
    )
    run.write_report(
        disentanglement_report_name(seed, quick, metrics, entry["factors"] if factors else None), entry, command
    )
    return entry


def disentanglement_report_name(
    seed: int, quick: bool, metrics: Sequence[str] | None = None, factors: Sequence[str] | None = None
) -> str:
    """disentanglement-quick-seed0.json, disentanglement-full-seed3.json; a subset of the metrics or of the factors
    adds them: disentanglement-quick-seed0-mig+sap-fshape+scale.json."""
    chosen = "+".join(ordered(metrics)) if metrics is not None else ""
    scored = "f" + "+".join(factors) if factors else ""
    return report_name("disentanglement", "quick" if quick else "full", f"seed{seed}", chosen, scored)
