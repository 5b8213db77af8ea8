"""Reproduce Burda et al. 2015 (IWAE), Table 1, and the statically binarized MNIST VAE, as far as a budget allows.

Each row is a shipped preset (``vaelab presets``): the paper's architecture, data, batch size and learning-rate
stages (``lr_schedule=iwae``: 3^i passes at 1e-3 * 10^(-i/7), i = 0..7, 3280 passes in all). The script trains
each row for ``--epochs`` passes (the paper: 3280), then estimates the test NLL with the IWAE bound at K=5000
(``--k``) on ``--eval-examples`` test points (a fixed random subset; all 10 000 with ``--eval-examples 0``), and
prints measured against published numbers, with epochs, wall times and the evaluation's samples/s.

    row                    preset                 published test NLL (nats)
    VAE, 1 layer, k=1      iwae-vae-1layer        86.76
    IWAE, 1 layer, k=5     iwae-iwae-k5-1layer    85.54
    IWAE, 1 layer, k=50    iwae-iwae-k50-1layer   84.78
    VAE, 2 layers, k=1     iwae-vae-2layer        85.33
    IWAE, 2 layers, k=50   iwae-iwae-k50-2layer   82.90
    VAE 784-400-40, static binarized-mnist       89.9  (vae-binarized-mnist)

Usage:
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/iwae_table.py --epochs 3 --eval-examples 500
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/iwae_table.py --rows iwae-vae-1layer --epochs 3280 \
        --eval-examples 0 --device cuda
Results go to OUT/results.json (default runs/iwae-table); the rows train as a sweep into OUT/PRESET-seed0
(``--workers`` at once, or ``--engine ray``): runs already there are evaluated again, not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from vaelab.eval.evaluate import evaluate_model
from vaelab.runs import load
from vaelab.sweeps import parse_spec, run_sweep
from vaelab.training.trainer import resolve_device

PUBLISHED = {
    "iwae-vae-1layer": ("VAE, 1 stochastic layer, k=1", 86.76),
    "iwae-iwae-k5-1layer": ("IWAE, 1 stochastic layer, k=5", 85.54),
    "iwae-iwae-k50-1layer": ("IWAE, 1 stochastic layer, k=50", 84.78),
    "iwae-vae-2layer": ("VAE, 2 stochastic layers, k=1", 85.33),
    "iwae-iwae-k50-2layer": ("IWAE, 2 stochastic layers, k=50", 82.90),
    "vae-binarized-mnist": ("VAE 784-400-40, static binarization", 89.9),
}


def train_rows(args: argparse.Namespace) -> dict:
    """Train every row as a sweep (``vaelab sweep``, see benchmarks/sweeps/iwae_table.json), one sweep per distinct
    epoch count (``--epochs-for``), into OUT/PRESET-seed0; returns each run's sweep entry."""
    runs = {}
    by_epochs: dict[int, list[str]] = {}
    for name in args.rows:
        by_epochs.setdefault(args.epochs_for.get(name, args.epochs), []).append(name)
    for epochs, names in by_epochs.items():
        options = {"epochs": epochs, "device": args.device, "data_dir": args.data_dir}
        spec = {"grid": {"preset": names}, "options": options}
        status = run_sweep(parse_spec(spec), args.out, args.engine, args.workers)
        runs.update(status["runs"])
    for name, r in runs.items():
        if r["status"] != "done":
            raise SystemExit(f"{name}: {r['status']}: {r['error']}")
    return runs


def run_row(name: str, args: argparse.Namespace, previous: dict | None, trained: dict) -> dict:
    run_dir = args.out / f"{name}-seed0"
    entry = trained[run_dir.name]
    train_s = entry["seconds"] if entry["action"] != "kept" else (previous.get("train_s") if previous else None)
    run = load(run_dir, resolve_device(args.device))
    data = run.dataset(resolve_device(args.device), args.data_dir)
    if args.eval_examples:
        pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[: args.eval_examples]
        data = dataclasses.replace(data, test=data.test[pick.to(data.test.device)], test_labels=None)
    start = time.perf_counter()
    result = evaluate_model(run.model, data, "test", args.k, args.eval_batch_size)
    eval_s = time.perf_counter() - start
    label, published = PUBLISHED[name]
    epochs_done = max((r["epoch"] for r in run.metrics() if r.get("split") == "train"), default=-1) + 1
    row = {
        "row": label,
        "preset": name,
        "published_nll": published,
        "nll": result["nll"],
        "gap": result["nll"] - published,
        "elbo": result["elbo"],
        "active_units": result["active_units"],
        "latent_dim": result["latent_dim"],
        "epochs": epochs_done,
        "train_s": train_s,
        "eval_examples": result["num_examples"],
        "k": args.k,
        "eval_s": eval_s,
        "iwae_samples_per_s": result["iwae_samples_per_s"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    p.add_argument("--epochs", type=int, default=3, help="training passes per row (the paper: 3280)")
    p.add_argument("--epochs-for", nargs="*", default=[], metavar="ROW=N", help="per-row epochs, e.g. X=1")
    p.add_argument("--k", type=int, default=5000, help="importance samples of the test bound (the paper: 5000)")
    p.add_argument("--eval-examples", type=int, default=500, help="test points evaluated; 0 for all 10 000")
    p.add_argument("--eval-batch-size", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and binarized-mnist/ (else $VAELAB_DATA)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 1 is fastest on a busy CPU")
    p.add_argument("--out", type=Path, default=Path("runs/iwae-table"))
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="where the rows train")
    p.add_argument("--workers", type=int, default=1, help="rows trained at once (the local engine)")
    args = p.parse_args()
    args.epochs_for = {k: int(v) for k, v in (item.split("=") for item in args.epochs_for)}
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    trained = train_rows(args)
    for name in args.rows:
        results[name] = run_row(name, args, results.get(name), trained)
        results_file.write_text(json.dumps(results, indent=2))
    print(f"\n| row | published NLL | measured NLL (K={args.k}) | gap | epochs | train | eval |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results.values():
        train_s = "-" if r["train_s"] is None else f"{r['train_s'] / 60:.1f} min"
        print(
            f"| {r['row']} | {r['published_nll']:.2f} | {r['nll']:.2f} ({r['eval_examples']} test points) | "
            f"{r['gap']:+.2f} | {r['epochs']} | {train_s} | {r['eval_s']:.0f} s, "
            f"{r['iwae_samples_per_s']:,.0f} samples/s |"
        )


if __name__ == "__main__":
    main()
