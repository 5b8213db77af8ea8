"""β=1 against β=4 (and the other β-VAE family models) on procedural dSprites: every disentanglement metric.

Each row is a shipped preset (``vaelab presets``), trained with the same seed, then scored with
``vaelab disentanglement`` (fixed metric seed 0, the default sample sizes: BetaVAE score 10,000 / 5,000 points of
64 pairs, FactorVAE 10,000 / 5,000 votes of 64 images, MIG 10,000 codes, DCI and SAP 10,000 / 5,000 codes).

    preset                        model         published (64x64 dSprites)
    betavae-dsprites-small-b1     beta-vae b=1  BetaVAE score 61.58% (Higgins et al. 2017, "VAE")
    betavae-dsprites-small-b4     beta-vae b=4  BetaVAE score 99.23% (Higgins et al. 2017)
    annealed-vae-dsprites-small   annealed-vae  -
    beta-tcvae-dsprites-small     beta-tcvae    MIG about 0.3-0.4 (Chen et al. 2018)

Usage (one CPU thread, about 10 minutes of training per row at 30 epochs, 5 to 8 minutes of metrics):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement.py --seed 1 --rows betavae-dsprites-small-b1 \
        betavae-dsprites-small-b4 --out runs/disentanglement-seed1
Results go to OUT/results.json (default runs/disentanglement); runs already there are scored again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaelab.api import make_run_config
from vaelab.disentanglement import run_disentanglement
from vaelab.presets import get_preset
from vaelab.run import load
from vaelab.training.trainer import train

ROWS = (
    "betavae-dsprites-small-b1",
    "betavae-dsprites-small-b4",
    "annealed-vae-dsprites-small",
    "beta-tcvae-dsprites-small",
)
COLUMNS = (
    ("BetaVAE", "betavae/eval_accuracy"),
    ("FactorVAE", "factorvae/eval_accuracy"),
    ("MIG", "mig"),
    ("DCI dis.", "dci/disentanglement"),
    ("DCI compl.", "dci/completeness"),
    ("DCI info.", "dci/informativeness_test"),
    ("SAP", "sap"),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="presets to train and score")
    p.add_argument("--epochs", type=int, help="override the presets' epochs")
    p.add_argument("--seed", type=int, default=0, help="training seed, the same for every row")
    p.add_argument("--metric-seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tenth of the metric samples")
    p.add_argument("--out", default="runs/disentanglement")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for name in args.rows:
        preset = get_preset(name)
        run_dir = out / name
        options = {**preset.options, "seed": args.seed}
        if args.epochs:
            options["epochs"] = args.epochs
        start = time.perf_counter()
        if not (run_dir / "model.safetensors").exists():
            print(f"training {name} ...", flush=True)
            train(make_run_config(preset.model, preset.data, options), run_dir)
        train_s = time.perf_counter() - start
        run = load(run_dir)
        start = time.perf_counter()
        entry = run_disentanglement(run, args.metric_seed, quick=args.quick)
        last = [r for r in run.metrics() if r.get("split") == "val"][-1]
        results[name] = {
            "model": preset.model,
            "epochs": run.config.train.epochs,
            "seed": run.config.train.seed,
            "train_s": train_s,
            "metrics_s": time.perf_counter() - start,
            "val_elbo": last.get("elbo"),
            "val_kl": last.get("kl"),
            **entry["scores"],
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps({k: v for k, v in results[name].items() if "/" not in k or k in dict(COLUMNS).values()}))
    print()
    print("| preset | epochs | val ELBO | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---|---:|---:|" + "---:|" * len(COLUMNS))
    for name in args.rows:
        r = results[name]
        cells = [f"{100 * r[k]:.1f}%" if "accuracy" in k else f"{r[k]:.3f}" for _, k in COLUMNS]
        print(f"| {name} | {r['epochs']} | {r['val_elbo']:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
