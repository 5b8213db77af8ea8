"""The prior registry on MNIST: the same VAE with prior=standard, learned, mog and vamp, at equal epochs.

Every row trains the MLP VAE 784-300-300-40 (ReLU, Bernoulli likelihood, dynamically binarized MNIST, batch 100,
Adam lr 5e-4, KL warm-up over the first ``--warmup`` epochs, the same seed) for ``--epochs`` epochs, keeps the best
validation epoch, and estimates the test NLL with the IWAE bound at K = ``--k`` on all 10 000 test images. The
mixture priors have K = 500 components (``prior_components``; the VampPrior's pseudo-inputs), as in Tomczak &
Welling 2018, who report the VampPrior about 2-3 nats better than the standard prior on MNIST (their VAE, trained
far longer: up to 2000 epochs with early stopping).

Interrupted runs resume; finished runs are evaluated again only when their eval.json is missing.

Usage:
    VAELAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/priors.py --epochs 100
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/priors.py --priors standard vamp --epochs 5 --k 100
Results: OUT/results.json (default runs/priors) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaelab.eval.evaluate import evaluate
from vaelab.runs import CHECKPOINT, load, load_checkpoint, make_run_config
from vaelab.training.trainer import resolve_device, train

PRIORS = ("standard", "learned", "mog", "vamp")


def options(args: argparse.Namespace, prior: str) -> dict:
    return {
        "backbone": "mlp",
        "hidden": (300, 300),
        "latent_dim": 40,
        "prior": prior,
        "prior_components": 500,
        "batch_size": 100,
        "lr": 5e-4,
        "epochs": args.epochs,
        "kl_warmup_steps": args.warmup * 540,  # 54 000 training images / 100
        "seed": args.seed,
        "device": args.device,
    }


def row(args: argparse.Namespace, prior: str) -> dict:
    run_dir = args.out / prior
    start = time.perf_counter()
    if not (run_dir / CHECKPOINT).exists():
        train(make_run_config("vae", "mnist", options(args, prior)), run_dir)
    elif not load_checkpoint(run_dir / CHECKPOINT).get("finished"):
        train(None, run_dir, resume=True)
    train_s = time.perf_counter() - start
    device = resolve_device(args.device)
    run = load(run_dir, device)
    report = run_dir / "eval.json"
    start = time.perf_counter()
    if report.exists() and json.loads(report.read_text()).get("iw_samples") == args.k:
        result = json.loads(report.read_text())
    else:
        result = evaluate(run, "test", args.k, str(device))
    epochs = [r for r in run.metrics() if r.get("split") == "val"]
    best = min(epochs, key=lambda r: r["loss"])
    return {
        "prior": prior,
        "epochs": len(epochs),
        "best_epoch": best["epoch"],
        "test_nll": result["nll"],
        "test_elbo": result["elbo"],
        "active_units": result["active_units"],
        "k": args.k,
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10, help="KL warm-up epochs")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the test NLL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/priors"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for prior in args.priors:
        results[prior] = row(args, prior)
        results_path.write_text(json.dumps(results, indent=2))
    print(f"{'prior':10} {'epochs':>6} {'best':>5} {'test NLL':>9} {'ELBO':>9} {'active':>6} {'train s':>8}")
    for r in results.values():
        print(
            f"{r['prior']:10} {r['epochs']:6d} {r['best_epoch']:5d} {r['test_nll']:9.2f} {r['test_elbo']:9.2f} "
            f"{r['active_units']:6d} {r['train_s']:8.0f}"
        )


if __name__ == "__main__":
    main()
