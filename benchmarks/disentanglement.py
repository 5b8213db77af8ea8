"""β=1 against β=4 (and the other β-VAE family models) on procedural dSprites: every disentanglement metric, over
several training seeds, with the seeds paired (β=1 and β=4 share each seed).

Each row is a shipped preset (``vaelab presets``), trained once per seed, then scored with
``vaelab disentanglement`` (fixed metric seed 0, the default sample sizes: BetaVAE score 10,000 / 5,000 points of
64 pairs, FactorVAE 10,000 / 5,000 votes of 64 images, MIG 10,000 codes, DCI and SAP 10,000 / 5,000 codes).

    betavae-dsprites-small-b1, betavae-dsprites-small-b4, annealed-vae-dsprites-small, beta-tcvae-dsprites-small,
    factor-vae-dsprites-small

(dsprites-small numbers are compared with each other only, never with published dSprites numbers; the study of
benchmarks/disentanglement_study.py is the fuller comparison.)

Usage (one CPU thread per process, about 10 minutes of training per row and seed at 30 epochs, 6 to 7 minutes of
metrics):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement.py                       # every row, seed 0
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement.py --seeds 1 2 3 4 5 \
        --rows betavae-dsprites-small-b1 betavae-dsprites-small-b4
The rows and seeds are a sweep (``vaelab sweep``; ``benchmarks/sweeps/disentanglement.json`` is the default one):
runs go to OUT/PRESET-seedS, run by ``--workers`` local processes at once (or ``--engine ray``); a rerun skips the
runs that are trained and scored, resumes interrupted ones, and --rescore scores them again. Each row's scores are
also kept in OUT/PRESET-seedS/benchmark.json. Training as long as needed: with --epochs N, a run in OUT that has
trained fewer epochs (a shorter benchmark) is trained on to N and scored again; that gives the same weights as a
run of N epochs (constant learning rate), so a copy of OUT can be taken further, e.g. 30 -> 60 -> 120 epochs.
Every finished row under OUT is then gathered into OUT/results.json and printed: per seed, as mean ± standard
deviation over the seeds, and, for β=1 against β=4, on how many seeds β=4 scores higher on each metric.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vaelab.eval.disentanglement import HEADLINE_SCORES, disentanglement_report_name, run_disentanglement
from vaelab.runs import load, read_metrics
from vaelab.sweeps import parse_spec, read_status, run_sweep

ROWS = (
    "betavae-dsprites-small-b1",
    "betavae-dsprites-small-b4",
    "annealed-vae-dsprites-small",
    "beta-tcvae-dsprites-small",
    "factor-vae-dsprites-small",
)
PAIR = ("betavae-dsprites-small-b1", "betavae-dsprites-small-b4")  # compared seed by seed
COLUMNS = HEADLINE_SCORES  # (column, key in the report's scores)
RESULT = "benchmark.json"


def sweep_spec(args: argparse.Namespace) -> dict:
    """The benchmark as a sweep (benchmarks/sweeps/disentanglement.json is its default): the presets crossed with
    the seeds, each run scored by ``vaelab disentanglement``."""
    spec = {
        "grid": {"preset": list(args.rows)},
        "seeds": list(args.seeds),
        "eval": {"disentanglement": {"seed": args.metric_seed, "quick": args.quick}},
    }
    if args.epochs:
        spec["options"] = {"epochs": args.epochs}
    return spec


def row_of(run_dir: Path, preset: str, seconds: float | None, args: argparse.Namespace) -> dict:
    """One row of the table from a scored run folder (kept in RUN/benchmark.json)."""
    run = load(run_dir)
    if args.rescore:
        start = time.perf_counter()
        run_disentanglement(run, args.metric_seed, quick=args.quick)
        seconds = time.perf_counter() - start
    entry = json.loads((run_dir / disentanglement_report_name(args.metric_seed, args.quick)).read_text())
    last = [r for r in read_metrics(run_dir) if r.get("split") == "val"][-1]
    row = {
        "preset": preset,
        "model": run.config.model,
        "epochs": run.config.train.epochs,
        "seed": run.config.train.seed,
        "seconds": seconds,  # training and scoring, as the sweep measured them
        "quick": args.quick,
        "val_elbo": last.get("elbo"),
        "val_kl": last.get("kl"),
        **entry["scores"],
    }
    (run_dir / RESULT).write_text(json.dumps(row, indent=2))
    return row


def preset_order(row: dict) -> tuple[int, str]:
    """ROWS first, in their order, then any other preset by name."""
    return (ROWS.index(row["preset"]) if row["preset"] in ROWS else len(ROWS), row["preset"])


def gather(out: Path, args: argparse.Namespace) -> list[dict]:
    """Every finished row of the sweep in OUT, by seed, then in preset order."""
    rows = []
    for name, r in read_status(out)["runs"].items():
        if r["status"] == "done" and "preset" in r["values"]:
            rows.append(row_of(out / name, r["values"]["preset"], r.get("seconds"), args))
    return sorted(rows, key=lambda r: (r["seed"], *preset_order(r)))


def cell(key: str, value: float) -> str:
    return f"{100 * value:.1f}%" if "accuracy" in key else f"{value:.3f}"


def report(rows: list[dict]) -> None:
    header = " | ".join(c for c, _ in COLUMNS)
    print(f"\n| preset | seed | epochs | val ELBO | {header} |\n|---|---:|---:|---:|" + "---:|" * len(COLUMNS))
    for r in rows:
        cells = " | ".join(cell(k, r[k]) for _, k in COLUMNS)
        print(f"| {r['preset']} | {r['seed']} | {r['epochs']} | {r['val_elbo']:.1f} | {cells} |")

    by_preset: dict[str, list[dict]] = {}
    for r in sorted(rows, key=preset_order):  # stable: seeds stay in order
        by_preset.setdefault(r["preset"], []).append(r)
    print(f"\n| preset | seeds | {header} |\n|---|---:|" + "---:|" * len(COLUMNS))
    for name, group in by_preset.items():
        cells = []
        for _, k in COLUMNS:
            values = [r[k] for r in group]
            mean = cell(k, statistics.mean(values))
            cells.append(f"{mean} ± {cell(k, statistics.stdev(values))}" if len(values) > 1 else mean)
        print(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")

    low, high = ({r["seed"]: r for r in by_preset.get(name, [])} for name in PAIR)
    seeds = sorted(set(low) & set(high))
    if seeds:
        print(f"\n{PAIR[1]} against {PAIR[0]}, seed by seed ({len(seeds)} seeds: {seeds}):")
        for column, k in COLUMNS:
            wins = [s for s in seeds if high[s][k] > low[s][k]]
            diff = cell(k, statistics.mean(high[s][k] - low[s][k] for s in seeds))
            print(f"  {column:>10}: higher on {len(wins)}/{len(seeds)} seeds, mean difference {diff}")
        every = [s for s in seeds if all(high[s][k] > low[s][k] for _, k in COLUMNS)]
        print(f"  higher on every metric: {len(every)}/{len(seeds)} seeds {every}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="presets to train and score")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds; every row trains once per seed")
    p.add_argument(
        "--epochs", type=int, help="train every row this long (default: its preset's); a shorter run in OUT trains on"
    )
    p.add_argument("--metric-seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tenth of the metric samples")
    p.add_argument("--rescore", action="store_true", help="score runs again that already have their scores")
    p.add_argument("--out", default="runs/disentanglement")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="where the runs execute")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each with its share of the CPU threads")
    args = p.parse_args()
    status = run_sweep(parse_spec(sweep_spec(args)), args.out, args.engine, args.workers)
    for name, r in status["runs"].items():
        if r["status"] != "done":
            print(f"{name}: {r['status']}: {r['error']}", flush=True)
    out = Path(args.out)
    rows = gather(out, args)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    report(rows)


if __name__ == "__main__":
    main()
