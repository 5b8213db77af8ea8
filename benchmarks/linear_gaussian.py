"""Linear-Gaussian models (probabilistic PCA) fitted five ways, scored by their exact test log-likelihood.

For each data set and latent size d: the closed form (Tipping & Bishop), EM, SGVB with a diagonal and with a full-
covariance linear encoder, and SGVB with alternating updates (train.alternate=K), each trained through the ordinary
trainer into its own run folder. Reported: the exact test log p(x) per image (nats), its distance to the closed-form
fit's, the same distance on the training set (where the closed form is the optimum), and the CPU time of the fit
(process time of the training call, data loading included; on a shared machine wall-clock time says little).

    PYTHONPATH=src VAELAB_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/linear_gaussian.py \
        --data digits mnist --latent 2 10 50 --out /tmp/bench-lg

Pixels are in [0, 1] (no binarization: the likelihood is Gaussian). SGVB runs use lr=1e-2 (``--lr``) with a cosine
decay, batches of 100, and the epochs given per data set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from vaelab.runs import load, make_run_config
from vaelab.training.trainer import train

METHODS = {
    "closed form": {"fit": "closed-form"},
    "EM": {"fit": "em"},
    "SGVB diagonal": {"fit": "sgvb", "posterior": "diagonal"},
    "SGVB full": {"fit": "sgvb", "posterior": "full"},
    "SGVB alternating": {"fit": "sgvb", "posterior": "diagonal", "alternate": 10},
}


def fit(out: Path, data: str, d: int, method: str, epochs: int, lr: float = 1e-2) -> dict:
    """Train one method; return its exact test log-likelihood per image and the CPU seconds it took."""
    options = {"latent_dim": d, "val_fraction": 0, "seed": 0, **METHODS[method]}
    if options["fit"] == "sgvb":
        options.update(epochs=epochs, lr=lr, lr_schedule="cosine", batch_size=100, log_every=1000)
    folder = out / f"{data}-d{d}-{method.replace(' ', '-').lower()}"
    shutil.rmtree(folder, ignore_errors=True)
    start = time.process_time()
    train(make_run_config("linear-gaussian", data, options), folder)
    seconds = time.process_time() - start
    run = load(folder)
    data = run.dataset()
    with torch.no_grad():
        log_px, train_log_px = (
            float(torch.cat([run.model.log_marginal(x[i : i + 1000]) for i in range(0, len(x), 1000)]).mean())
            for x in (data.test, data.train)
        )
    steps = [r for r in run.metrics() if r["split"] == "train"]
    return {
        "log_px": log_px,
        "train_log_px": train_log_px,
        "cpu_s": seconds,
        "steps": steps[-1]["step"] if steps else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["digits", "mnist"])
    p.add_argument("--latent", nargs="+", type=int, default=[2, 10, 50])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs-digits", type=int, default=100)
    p.add_argument("--epochs-mnist", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2, help="the SGVB fits' learning rate before its cosine decay")
    p.add_argument("--out", default="/tmp/bench-linear-gaussian")
    args = p.parse_args()
    out = Path(args.out)
    rows = []
    for data in args.data:
        epochs = args.epochs_digits if data == "digits" else args.epochs_mnist
        for d in args.latent:
            best = None
            for method in args.methods:
                r = fit(out, data, d, method, epochs, args.lr)
                best = (r["log_px"], r["train_log_px"]) if method == "closed form" else best
                gap = "" if best is None else f"{r['log_px'] - best[0]:+.2f}"
                train_gap = "" if best is None else f"{r['train_log_px'] - best[1]:+.2f}"
                rows.append({"data": data, "d": d, "method": method, "epochs": epochs, **r})
                print(
                    f"| {data} | {d} | {method} | {r['log_px']:.2f} | {gap} | {train_gap} | {r['cpu_s']:.1f} | "
                    f"{r['steps']} |",
                    flush=True,
                )
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
