"""A disentanglement study in the manner of Locatello et al. 2019 (disentanglement_lib's unsupervised study): train a
grid of models x hyperparameters x seeds from a JSON spec, score every run with every metric, and aggregate like
disentanglement_lib's ``aggregate_results`` (one row per run with its settings and scores, in ``results.json``),
then tabulate: mean ± sd and per seed, the Spearman rank correlation between the metrics over all runs, and a box
plot per metric by model and hyperparameter.

A spec (``benchmarks/studies/*.json``)::

    {"description": "...", "epochs": 30, "seeds": [0, 1, 2, 3, 4], "metric_seed": 0, "quick": false,
     "groups": [{"label": "β-VAE", "preset": "betavae-dsprites-small-b4", "sweep": {"beta": [1, 2, 4, 8, 16]}},
                {"label": "β-TCVAE", "preset": "beta-tcvae-dsprites-small", "options": {"beta": 6}}]}

``sizes`` (optional) sets metric sample sizes, metric by metric, over ``quick``'s or the defaults, e.g.
``{"dci": {"num_train": 1000, "num_test": 500}}``. Each group is a shipped preset (``vaelab presets``), optionally
checked against ``model``, with ``options`` set on it and at most one ``sweep`` key taking each listed value; every
cell trains once per seed. The whole spec is checked (presets, models, option keys) before anything trains; a bad
one is a one-line error.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_study.py benchmarks/studies/dsprites-small-tiny.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_study.py benchmarks/studies/dsprites-small.json \
        --out runs/study --only "β-VAE β=4" --seeds 0 1   # a part of it
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_study.py SPEC --out runs/study &  # twice: two
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_study.py SPEC --out runs/study &  # processes

Runs go to OUT/<cell>/seed-S/ with their scores in score.json. A run whose score was taken with the same options,
budget and metric settings is neither trained nor scored again, and one trained with other options is refused, so an
interrupted study resumes (an unfinished run goes on where it stopped) and a changed spec never reuses old scores.
Processes sharing one --out take the cells in turn: a cell one of them holds (OUT/<cell>/seed-S.claim) the others
skip, and wait for at the end, so each of them reports the whole study. Then OUT/results.json, OUT/report.md and
OUT/figures/<metric>.png.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.core.errors import VaelabError
from vaelab.eval.disentanglement import HEADLINE_SCORES, run_disentanglement
from vaelab.models import MODELS
from vaelab.presets import get_preset
from vaelab.runs import CHECKPOINT, load, load_checkpoint, make_run_config
from vaelab.runs.folder import has_run
from vaelab.training.trainer import train

SCORES = HEADLINE_SCORES  # the scores tabulated: (column, key in the report's scores)
SPEC_KEYS = {"description", "epochs", "seeds", "metric_seed", "quick", "sizes", "groups"}
GROUP_KEYS = {"label", "preset", "model", "options", "sweep"}


@dataclass(frozen=True)
class Cell:
    """One model and setting of the study, trained once per seed."""

    label: str
    preset: str
    model: str
    data: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The cell's folder under OUT: its label in ASCII (β -> beta, other runs of odd characters -> -)."""
        return re.sub(r"[^A-Za-z0-9.=]+", "-", self.label.replace("β", "beta")).strip("-")


def read_spec(path: Path) -> tuple[dict[str, Any], list[Cell]]:
    """The spec and its cells, every one checked (preset, model, option keys); VaelabError names the first fault."""
    if not path.is_file():
        raise VaelabError(f"study spec not found: {path}")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VaelabError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("groups"), list) or not spec["groups"]:
        raise VaelabError(f"{path}: a study spec is an object with a non-empty list of groups")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise VaelabError(f"{path}: unknown key {unknown[0]!r}; a study spec has: {', '.join(sorted(SPEC_KEYS))}")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise VaelabError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    cells = []
    for i, group in enumerate(spec["groups"]):
        if not isinstance(group, dict) or "preset" not in group:
            raise VaelabError(f"{path}: group {i} must be an object naming a preset")
        unknown = sorted(set(group) - GROUP_KEYS)
        if unknown:
            raise VaelabError(
                f"{path}: group {i}: unknown key {unknown[0]!r}; a group has: {', '.join(sorted(GROUP_KEYS))}"
            )
        preset = get_preset(group["preset"])  # unknown preset: VaelabError listing the presets
        if "model" in group:
            MODELS.get(group["model"])  # unknown model: VaelabError listing the models
            if group["model"] != preset.model:
                raise VaelabError(f"group {i}: preset {preset.name!r} trains {preset.model!r}, not {group['model']!r}")
        sweep = group.get("sweep", {})
        if len(sweep) > 1 or any(not isinstance(v, list) or not v for v in sweep.values()):
            raise VaelabError(f"group {i}: sweep takes one option and a non-empty list of its values, got {sweep!r}")
        label = group.get("label", preset.name)
        settings = [{}] if not sweep else [{key: v} for key, values in sweep.items() for v in values]
        for setting in settings:
            options = {**preset.options, **group.get("options", {}), **setting}
            make_run_config(preset.model, preset.data, options)  # unknown option: VaelabError listing the keys
            name = label + "".join(f" {k if k != 'beta' else 'β'}={v:g}" for k, v in setting.items())
            cells.append(Cell(name, preset.name, preset.model, preset.data, options))
    names = [c.label for c in cells]
    if len(set(names)) != len(names):
        raise VaelabError(f"{path}: two cells share a label; give each group its own label")
    return spec, cells


@contextlib.contextmanager
def held(path: Path, wait: bool) -> Iterator[bool]:
    """Hold ``path``'s lock while the block runs: True once held; False at once when another process holds it and
    ``wait`` is off (with ``wait`` on, block until it lets go). Released however the process ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _settings(cell: Cell, spec: dict[str, Any]) -> dict[str, Any]:
    """What a cell's score depends on: its options, the budget, and the metric protocol (sizes, quick, seed)."""
    return {
        "options": {k: v for k, v in cell.options.items() if k not in ("seed", "epochs")},
        "epochs": int(spec.get("epochs", cell.options.get("epochs", 30))),
        "quick": bool(spec.get("quick", False)),
        "sizes": spec.get("sizes"),
        "metric_seed": int(spec.get("metric_seed", 0)),
    }


def _taken_with(row: dict[str, Any], cell: Cell, spec: dict[str, Any]) -> bool:
    """Whether a kept score row was taken with the cell's settings as the spec gives them now."""
    return all(row.get(key) == value for key, value in _settings(cell, spec).items())


def _check_trained(run: Any, expected: Any, run_dir: Path, label: str) -> None:
    """Refuse a run folder whose model or training settings are not the cell's (a spec changed under one --out)."""
    changed = [
        f"{part}.{key}"
        for part in ("model_config", "train")
        for key, value in vars(getattr(expected, part)).items()
        if vars(getattr(run.config, part)).get(key) != value
    ]
    if changed:
        raise VaelabError(
            f"{run_dir} was trained with other settings than the cell {label!r} has now ({', '.join(changed)}): "
            "use another --out, or delete that run"
        )


def run_cell(cell: Cell, seed: int, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train (unless trained) and score one cell with one seed; the row is kept in RUN/score.json. A kept score is
    used again only when everything it depends on is unchanged (``_settings``), and a kept run only when it was
    trained with the cell's settings; else the run is scored anew, or refused."""
    run_dir = out / cell.folder / f"seed-{seed}"
    settings = _settings(cell, spec)
    epochs = settings["epochs"]
    if (run_dir / "score.json").is_file():
        row = json.loads((run_dir / "score.json").read_text())
        if _taken_with(row, cell, spec):
            return row
    expected = make_run_config(cell.model, cell.data, {**cell.options, "seed": seed, "epochs": epochs})
    start = time.perf_counter()
    if not has_run(run_dir):
        print(f"training {cell.label}, seed {seed}, {epochs} epochs ...", flush=True)
        train(expected, run_dir)
    else:
        _check_trained(load(run_dir), expected, run_dir, cell.label)
        if not load_checkpoint(run_dir / CHECKPOINT).get("finished"):  # an interrupted study: its run goes on
            print(f"resuming {cell.label}, seed {seed} ...", flush=True)
            train(None, run_dir, resume=True)
    train_s = time.perf_counter() - start
    run = load(run_dir)
    start = time.perf_counter()
    entry = run_disentanglement(run, settings["metric_seed"], quick=settings["quick"], sizes=settings["sizes"])
    last = [r for r in run.metrics() if r.get("split") == "val"][-1]
    row = {
        "cell": cell.label,
        "preset": cell.preset,
        "model": cell.model,
        "data": cell.data,
        "seed": seed,
        **settings,
        "train_s": train_s,
        "metrics_s": time.perf_counter() - start,
        "val_elbo": last.get("elbo"),
        "scores": entry["scores"],
    }
    (run_dir / "score.json").write_text(json.dumps(row, indent=2))
    return row


# -- aggregation ----------------------------------------------------------------------------------------------------


def current(rows: list[dict[str, Any]], cells: list[Cell], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows taken with the spec's cells and settings as they are now (a report never mixes in older ones)."""
    by_label = {c.label: c for c in cells}
    seeds = set(spec.get("seeds", [0]))
    return [
        r
        for r in rows
        if r.get("cell") in by_label and r.get("seed") in seeds and _taken_with(r, by_label[r["cell"]], spec)
    ]


def fmt(key: str, value: float) -> str:
    return f"{100 * value:.1f}%" if "accuracy" in key else f"{value:.3f}"


def report(rows: list[dict[str, Any]], cells: list[Cell]) -> str:
    """The study's tables as Markdown: mean ± sd per cell, every run, the Spearman rank correlation."""
    from scipy.stats import spearmanr

    order = {c.label: i for i, c in enumerate(cells)}
    rows = sorted(rows, key=lambda r: (order.get(r["cell"], len(order)), r["seed"]))
    header = " | ".join(c for c, _ in SCORES)
    lines = [f"| model | seeds | {header} |", "|---|---:|" + "---:|" * len(SCORES)]
    for label in order:
        group = [r for r in rows if r["cell"] == label]
        if not group:
            continue
        cells_ = []
        for _, key in SCORES:
            v = np.array([r["scores"][key] for r in group])
            cells_.append(fmt(key, v.mean()) + (f" ± {fmt(key, v.std(ddof=1))}" if len(v) > 1 else ""))
        lines.append(f"| {label} | {len(group)} | " + " | ".join(cells_) + " |")
    lines += [
        "",
        f"| model | seed | val ELBO | train s | metrics s | {header} |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(SCORES),
    ]
    for r in rows:
        scores = " | ".join(fmt(k, r["scores"][k]) for _, k in SCORES)
        times = f"{r['train_s']:.0f} | {r['metrics_s']:.0f}"
        lines.append(f"| {r['cell']} | {r['seed']} | {r['val_elbo']:.1f} | {times} | {scores} |")
    if len(rows) > 2:
        table = np.array([[r["scores"][k] for _, k in SCORES] for r in rows])
        rho = np.atleast_2d(spearmanr(table).statistic)
        lines += [
            "",
            f"Spearman rank correlation over {len(rows)} runs:",
            "",
            f"| | {header} |",
            "|---|" + "---:|" * len(SCORES),
        ]
        for i, (name, _) in enumerate(SCORES):
            lines.append(f"| {name} | " + " | ".join("—" if np.isnan(x) else f"{x:.2f}" for x in rho[i]) + " |")
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], cells: list[Cell], folder: Path) -> list[Path]:
    """A box plot per metric, one box per cell (its seeds as dots): OUT/figures/<metric>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    labels = [c.label for c in cells if any(r["cell"] == c.label for r in rows)]
    paths = []
    for name, key in SCORES:
        values = [[r["scores"][key] for r in rows if r["cell"] == label] for label in labels]
        fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 3.2))
        ax.boxplot(values, showfliers=False)
        for i, v in enumerate(values, start=1):
            ax.plot(np.full(len(v), i) + np.linspace(-0.08, 0.08, len(v)), v, "o", ms=4, alpha=0.7)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(name)
        ax.set_title(f"{name} by model and setting ({len(rows)} runs)", fontsize=9)
        fig.tight_layout()
        path = folder / f"{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec", type=Path, help="a study spec (benchmarks/studies/*.json)")
    p.add_argument("--out", type=Path, help="default: runs/study-<spec name>")
    p.add_argument("--only", nargs="+", help="train and score only these cells (labels); still report all found")
    p.add_argument("--seeds", nargs="+", type=int, help="only these of the spec's seeds (processes may split them)")
    p.add_argument("--report-only", action="store_true", help="aggregate the finished runs under OUT, train nothing")
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        spec, cells = read_spec(args.spec)
        out = args.out or Path("runs") / f"study-{args.spec.stem}"
        chosen = [c for c in cells if not args.only or c.label in args.only]
        if args.only and len(chosen) < len(set(args.only)):
            known = ", ".join(c.label for c in cells)
            raise VaelabError(f"--only names a cell the spec does not have; its cells are: {known}")
        start = time.perf_counter()
        if not args.report_only:
            seeds = [s for s in spec.get("seeds", [0]) if not args.seeds or s in args.seeds]
            # a cell another process holds is left to it at first, and waited for at the end
            todo = [(seed, cell) for seed in seeds for cell in chosen]
            for wait in (False, True):
                left = []
                for seed, cell in todo:
                    with held(out / cell.folder / f"seed-{seed}.claim", wait) as mine:
                        if not mine:
                            left.append((seed, cell))
                            continue
                        row = run_cell(cell, seed, spec, out)
                    print(json.dumps({"cell": row["cell"], "seed": seed, **{k: row["scores"][k] for _, k in SCORES}}))
                todo = left
        found = [json.loads(f.read_text()) for f in sorted(out.glob("*/seed-*/score.json"))]
        rows = current(found, cells, spec)
        if len(rows) < len(found):
            stale = len(found) - len(rows)
            print(f"left out: {stale} score(s) under {out} of cells or settings the spec no longer has")
        (out / "results.json").write_text(json.dumps(rows, indent=2))
        text = report(rows, cells)
        (out / "report.md").write_text(text + "\n")
        paths = figures(rows, cells, out / "figures")
        print(f"\n{text}\n\n{len(rows)} runs; figures: {', '.join(str(p) for p in paths)}")
        print(f"wall time of this call: {time.perf_counter() - start:.0f} s")
    except VaelabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
