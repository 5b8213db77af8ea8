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
Runs go to OUT/seed-S/PRESET, each row's scores to OUT/seed-S/PRESET/benchmark.json (kept: a run that has one is
neither trained nor scored again unless --rescore), so processes on different rows or seeds may share one OUT.
Training as long as needed: with --epochs N, a run in OUT that has trained fewer epochs (interrupted, or a
shorter benchmark) is trained on to N and scored again; that gives the same weights as a run of N epochs
(constant learning rate), so a copy of OUT can be taken further, e.g. 30 -> 60 -> 120 epochs.
Every finished row under OUT is then gathered into OUT/results.json and printed: per seed, as mean ± standard
deviation over the seeds, and, for β=1 against β=4, on how many seeds β=4 scores higher on each metric.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vaelab.eval.disentanglement import run_disentanglement
from vaelab.presets import get_preset
from vaelab.runs import load, make_run_config, read_metrics
from vaelab.training.trainer import train

ROWS = (
    "betavae-dsprites-small-b1",
    "betavae-dsprites-small-b4",
    "annealed-vae-dsprites-small",
    "beta-tcvae-dsprites-small",
    "factor-vae-dsprites-small",
)
PAIR = ("betavae-dsprites-small-b1", "betavae-dsprites-small-b4")  # compared seed by seed
COLUMNS = (
    ("BetaVAE", "betavae/eval_accuracy"),
    ("FactorVAE", "factorvae/eval_accuracy"),
    ("MIG", "mig"),
    ("DCI dis.", "dci/disentanglement"),
    ("DCI compl.", "dci/completeness"),
    ("DCI info.", "dci/informativeness_test"),
    ("SAP", "sap"),
)
RESULT = "benchmark.json"


def score_row(name: str, seed: int, args: argparse.Namespace) -> dict:
    """Train (unless trained) and score one preset with one seed; the row is kept in RUN/benchmark.json."""
    run_dir = Path(args.out) / f"seed-{seed}" / name
    preset = get_preset(name)
    epochs = args.epochs or preset.options["epochs"]
    if (run_dir / RESULT).exists() and not args.rescore:
        row = json.loads((run_dir / RESULT).read_text())
        if row["epochs"] == epochs:
            return row
    start = time.perf_counter()
    if not (run_dir / "config.json").exists():
        print(f"training {name}, seed {seed} ...", flush=True)
        train(make_run_config(preset.model, preset.data, {**preset.options, "seed": seed, "epochs": epochs}), run_dir)
    else:
        done = trained_epochs(run_dir)
        if done > epochs:
            raise SystemExit(f"{run_dir} has trained {done} epochs, more than --epochs {epochs}: use another --out")
        if done < epochs:  # interrupted, or a shorter run to train on: the same weights as one run of `epochs`
            print(f"training {name}, seed {seed} on from epoch {done} to {epochs} ...", flush=True)
            train(None, run_dir, resume=True, epochs=epochs)
    train_s = time.perf_counter() - start
    run = load(run_dir)
    start = time.perf_counter()
    entry = run_disentanglement(run, args.metric_seed, quick=args.quick)
    last = [r for r in run.metrics() if r.get("split") == "val"][-1]
    row = {
        "preset": name,
        "model": preset.model,
        "epochs": run.config.train.epochs,
        "seed": run.config.train.seed,
        "train_s": train_s,
        "metrics_s": time.perf_counter() - start,
        "quick": args.quick,
        "val_elbo": last.get("elbo"),
        "val_kl": last.get("kl"),
        **entry["scores"],
    }
    (run_dir / RESULT).write_text(json.dumps(row, indent=2))
    return row


def trained_epochs(run_dir: Path) -> int:
    """Epochs a run has finished: the last validation row's epoch in its metrics.jsonl (0 before the first)."""
    return max((r["epoch"] for r in read_metrics(run_dir) if r.get("split") == "val"), default=0)


def preset_order(row: dict) -> tuple[int, str]:
    """ROWS first, in their order, then any other preset by name."""
    return (ROWS.index(row["preset"]) if row["preset"] in ROWS else len(ROWS), row["preset"])


def gather(out: Path) -> list[dict]:
    """Every finished row under OUT (any process, any seed), by seed, then in preset order."""
    rows = [json.loads(p.read_text()) for p in out.glob(f"seed-*/*/{RESULT}")]
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
    args = p.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        for name in args.rows:
            row = score_row(name, seed, args)
            print(json.dumps({k: v for k, v in row.items() if "/" not in k or k in dict(COLUMNS).values()}), flush=True)
    out = Path(args.out)
    rows = gather(out)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    report(rows)


if __name__ == "__main__":
    main()
