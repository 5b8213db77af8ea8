"""TD-VAE's jumpy predictions on held-out sequences, against two baselines scored the same way.

For each data set two shipped presets are trained with the same architecture, objective and budget: ``tdvae-DATA``
(jumps delta ~ U{1..D}) and ``tdvae-DATA-delta1`` (the same config with max_jump=1: delta = 1 only), once per seed.
On the test sequences (generated from a fixed seed; moving MNIST moves MNIST's test digits) the first T - H frames
are observed and frame T - H - 1 + h is predicted, h = 1..H: TD-VAE jumps there with the fewest jumps of at most D,
the delta = 1 model steps h times, and the third predictor repeats the last observed frame. Scores per horizon
(``vaelab.sequence_eval``): MSE of the predictive mean over ``--samples`` imagined futures, and the NLL estimate
-log (1/S) sum_s p_D(x|z_s); per-frame ELBO of both. The table gives each seed and the mean over seeds.

Usage (oscillator, then moving MNIST at 36x36 with one digit; about an hour on one CPU thread for four seeds):
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/tdvae_prediction.py
    .venv/bin/python benchmarks/tdvae_prediction.py --data oscillator --epochs 10 --seeds 0     # a quick look
Runs go to OUT/PRESET-seedN (default runs/tdvae-prediction), trained as one sweep (``--workers`` at once, or
``--engine ray``); a run already there is evaluated again, not retrained, and an interrupted one is resumed.
The table and OUT/results.json hold the numbers; the CLI gives the same for one pair of runs:
    vaelab train --preset tdvae-oscillator --out runs/osc && vaelab train --preset tdvae-oscillator-delta1 \
        --out runs/osc-delta1 && vaelab predict runs/osc --baseline runs/osc-delta1 --samples 32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vaelab.eval.sequences import REPEAT_LAST, evaluate_predictions
from vaelab.runs import load
from vaelab.sweeps import parse_spec, run_sweep
from vaelab.training.trainer import resolve_device

DATA = ("oscillator", "moving-mnist")
HORIZON = {"oscillator": 6, "moving-mnist": 6}  # H: two of the presets' longest jumps (D = 3)
TDVAE, STEP = "TD-VAE", "delta=1 model"


def train_all(args: argparse.Namespace) -> dict:
    """Train both presets of every data set once per seed: one sweep (``vaelab sweep``; see
    benchmarks/sweeps/tdvae_prediction.json), into OUT/PRESET-seedN; returns its status."""
    options = {"device": args.device, "data_dir": args.data_dir}
    if args.epochs:
        options["epochs"] = args.epochs
    presets = [name for data in args.data for name in (f"tdvae-{data}", f"tdvae-{data}-delta1")]
    spec = {"grid": {"preset": presets}, "options": options, "seeds": list(args.seeds)}
    status = run_sweep(parse_spec(spec), args.out, args.engine, args.workers)
    for name, r in status["runs"].items():
        if r["status"] != "done":
            raise SystemExit(f"{name}: {r['status']}: {r['error']}")
    return status


def benchmark(data: str, seed: int, args: argparse.Namespace, status: dict) -> dict:
    device = resolve_device(args.device)
    dirs, seconds = {}, {}
    for label, name in ((TDVAE, f"tdvae-{data}"), (STEP, f"tdvae-{data}-delta1")):
        dirs[label] = args.out / f"{name}-seed{seed}"
        run = status["runs"][dirs[label].name]
        seconds[label] = run["seconds"] if run["action"] != "kept" else None
    runs = {label: load(path, device) for label, path in dirs.items()}
    horizon = args.horizon or HORIZON[data]
    dataset = runs[TDVAE].dataset(device, args.data_dir)
    start = time.perf_counter()
    result = evaluate_predictions({k: r.model for k, r in runs.items()}, dataset, horizon, samples=args.samples)
    result.update(
        data=data,
        seed=seed,
        eval_s=time.perf_counter() - start,
        train_s=seconds,
        runs={k: str(v) for k, v in dirs.items()},
    )
    result["tdvae_below_both"] = below_both(result["results"])
    return result


def below_both(results: dict) -> list[bool]:
    """Per horizon: is TD-VAE's MSE below both baselines'?"""
    mse = {name: results[name]["mse"] for name in (TDVAE, STEP, REPEAT_LAST)}
    return [t < min(s, r) for t, s, r in zip(mse[TDVAE], mse[STEP], mse[REPEAT_LAST])]


def mean_over_seeds(runs: list[dict]) -> dict:
    """The per-horizon scores averaged over seeds, in the layout of one seed's result."""
    mean = {**runs[0], "seed": "mean of " + ", ".join(str(r["seed"]) for r in runs), "train_s": {}}
    mean["results"] = {
        name: {key: np.mean([r["results"][name][key] for r in runs], 0).tolist() for key in values}
        for name, values in runs[0]["results"].items()
    }
    mean["tdvae_below_both"] = below_both(mean["results"])
    return mean


def print_table(r: dict) -> None:
    res = r["results"]
    print(
        f"\n{r['data']}, seed {r['seed']}: {r['num_sequences']} test sequences of {r['frames']} frames, "
        f"{r['context']} observed, S={r['samples']}; MSE per dimension of x_(t+h) (NLL in nats per frame)"
    )
    print(f"| h | {TDVAE} | {STEP} | {REPEAT_LAST} | TD-VAE lowest |")
    print("| ---: | ---: | ---: | ---: | :---: |")
    for i, h in enumerate(r["horizons"]):
        cells = [f"{res[k]['mse'][i]:.4f} ({res[k]['nll'][i]:.2f})" for k in (TDVAE, STEP)]
        best = "yes" if r["tdvae_below_both"][i] else "no"
        print(f"| {h} | {cells[0]} | {cells[1]} | {res[REPEAT_LAST]['mse'][i]:.4f} | {best} |")
    print(
        f"ELBO per frame (nats): {TDVAE} {res[TDVAE]['elbo_per_frame']:.3f}, {STEP} {res[STEP]['elbo_per_frame']:.3f}; "
        "training s: " + ", ".join(f"{k} {v:.0f}" for k, v in r["train_s"].items() if v is not None)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/tdvae-prediction"))
    p.add_argument("--horizon", type=int, help="H (default 6: two of the presets' longest jumps, D = 3)")
    p.add_argument("--samples", type=int, default=32, help="imagined futures per test sequence")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="training seeds of both models (default 0 1 2 3)"
    )
    p.add_argument("--epochs", type=int, help="override the presets' epochs (both models alike)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: small networks run fastest so)"
    )
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-dir", help="folder with mnist/ (else $VAELAB_DATA; offline: the embedded 8x8 digits)")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="where the runs train")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once (the local engine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    status = train_all(args)
    results = []
    for data in args.data:
        runs = []
        for seed in args.seeds:
            runs.append(benchmark(data, seed, args, status))
            print_table(runs[-1])
        results += runs
        if len(runs) > 1:
            results.append(mean_over_seeds(runs))
            print_table(results[-1])
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
