"""Every run of a sweep gathered into one table: per group of runs (a point of the grid) and metric, the mean ±
standard deviation over the seeds and each seed's value; written as SWEEP/aggregate.csv, with a figure per metric in
SWEEP/figures/METRIC.png.

The metrics are the last training and validation rows of each run's metrics.jsonl (``train/...``, ``val/...``) and
the numbers of the reports the spec asked for (``eval/...``, the disentanglement scores, ``predict/...``,
``probe/...``)."""

from __future__ import annotations

import csv
import io
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import write_text
from vaelab.sweeps.reports import REPORTS, training_numbers
from vaelab.sweeps.spec import value_text
from vaelab.sweeps.sweep import read_status
from vaelab.viz.sweeps import figure_name, metric_figure

CSV = "aggregate.csv"
FIGURES = "figures"


@dataclass(frozen=True)
class Row:
    """One group of runs and one metric: the group's grid values, each seed's value, their mean and sd (None for
    one seed)."""

    values: dict[str, Any]
    metric: str
    by_seed: dict[int, float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.by_seed.values())

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.by_seed.values()) if len(self.by_seed) > 1 else None

    @property
    def group(self) -> str:
        return ", ".join(f"{k}={value_text(v)}" for k, v in self.values.items()) or "all"


@dataclass(frozen=True)
class Aggregate:
    """The table of a sweep: its rows, the grid's keys, the seeds, the runs without numbers (not done), and the files
    written."""

    rows: list[Row]
    keys: list[str]
    seeds: list[int]
    missing: dict[str, str]
    csv: Path
    figures: list[Path]


def run_numbers(run_dir: Path, kinds: list[str], options: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """A run's metrics: its training rows and the reports of ``kinds`` (``options``: each kind's report options)."""
    options = options or {}
    found = training_numbers(run_dir)
    for kind in kinds:
        found.update(REPORTS.get(kind).read(run_dir, options.get(kind)))
    return found


def aggregate(
    sweep_dir: str | os.PathLike, csv_path: str | os.PathLike | None = None, metrics: list[str] | None = None
) -> Aggregate:
    """Gather the sweep in ``sweep_dir`` (see the module's docstring); ``metrics`` keeps only the metrics named or
    starting with one of these prefixes (e.g. ``eval/``)."""
    sweep_dir = Path(sweep_dir)
    status = read_status(sweep_dir)
    kinds = [k for k in _kinds(status["spec"].get("eval", [])) if k in REPORTS]
    spec_eval = status["spec"].get("eval", [])
    report_options = {k: o or {} for k, o in spec_eval.items()} if isinstance(spec_eval, dict) else {}
    groups: dict[str, tuple[dict[str, Any], dict[str, dict[int, float]]]] = {}
    missing: dict[str, str] = {}
    seeds: list[int] = []
    keys: list[str] = []
    for name, run in status["runs"].items():
        values = run["values"]
        keys += [k for k in values if k not in keys]
        if run["status"] != "done":
            missing[name] = f"{run['status']}" + (f": {run['error']}" if run.get("error") else "")
            continue
        seeds += [run["seed"]] if run["seed"] not in seeds else []
        group = groups.setdefault(repr(sorted(values.items(), key=str)), (values, {}))[1]
        for metric, value in run_numbers(sweep_dir / name, kinds, report_options).items():
            if metrics is None or any(metric == m or metric.startswith(m) for m in metrics):
                group.setdefault(metric, {})[run["seed"]] = value
    if not groups:
        raise VaelabError(f"no run of the sweep in {sweep_dir} has finished yet; nothing to aggregate")
    rows = [Row(values, metric, by_seed) for values, found in groups.values() for metric, by_seed in found.items()]
    if not rows:
        raise VaelabError(f"no metric of the sweep in {sweep_dir} matches {', '.join(metrics or [])}")
    rows.sort(key=lambda r: r.metric)  # stable: the groups stay in the sweep's order within a metric
    out = Path(csv_path) if csv_path is not None else sweep_dir / CSV
    write_csv(out, rows, keys, sorted(seeds))
    figures = []
    for metric in dict.fromkeys(r.metric for r in rows):
        mine = [r for r in rows if r.metric == metric]
        path = sweep_dir / FIGURES / figure_name(metric)
        figures.append(metric_figure(path, metric, [r.group for r in mine], [r.by_seed for r in mine]))
    return Aggregate(rows, keys, sorted(seeds), missing, out, figures)


def _kinds(spec_eval: Any) -> list[str]:
    return list(spec_eval) if isinstance(spec_eval, (list, dict)) else []


def write_csv(path: Path, rows: list[Row], keys: list[str], seeds: list[int]) -> None:
    """One line per group and metric: the grid values, the metric, n, mean, sd, then one column per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*keys, "metric", "n", "mean", "sd", *(f"seed_{s}" for s in seeds)])
        for r in rows:
            writer.writerow(
                [
                    *(value_text(r.values[k]) if k in r.values else "" for k in keys),
                    r.metric,
                    len(r.by_seed),
                    repr(r.mean),
                    "" if r.sd is None else repr(r.sd),
                    *("" if s not in r.by_seed else repr(r.by_seed[s]) for s in seeds),
                ]
            )
        write_text(path, f.getvalue())
