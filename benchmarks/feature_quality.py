"""Feature quality on MNIST: train the regularized autoencoders' presets, then a linear probe on their codes.

For each preset (ksparse-mnist, cae-mnist, dae-mnist, sparse-mnist: one layer of 1000 units, grey-level
MNIST; cross-entropy, or squared error for the k-sparse AE as in its paper) this trains the model exactly
as ``vaelab train --preset NAME`` does (``--epochs`` shortens the run; the k-sparse schedule is then
rescaled to anneal over the first half of it), then fits the probe of ``vaelab probe``: a multinomial
logistic regression (scikit-learn, L-BFGS, L2) on the standardized codes, its C chosen from 0.001, 0.01,
0.1, 1 on the 6000 validation images (fit on the other 54000; ``--max-train`` subsamples those), then
refit on all 60000 training images; it reports the error on the 10000 test images, beside the same
probe on raw pixels and the published errors.

Usage:
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/feature_quality.py              # presets as shipped
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/feature_quality.py --epochs 3 --max-iter 300
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/feature_quality.py --presets ksparse-mnist --epochs 1

Writes OUT/PRESET-seed0/ (run folders, with probe.json; trained as a sweep, ``--workers`` at once or
``--engine ray``) and OUT/results.json; a run folder already in OUT is reused when its config.json is exactly the
configuration asked for (its train time then shows as nan), and an interrupted one is resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from vaelab.eval.features import fit_probe, probe, probe_data
from vaelab.presets import get_preset
from vaelab.runs import load
from vaelab.sweeps import parse_spec, run_sweep

#: preset -> (published test error in %, the published setting it compares with)
PUBLISHED = {
    "ksparse-mnist": (
        1.35,
        "k-sparse AE, 1000 units, k=25, alpha=3, codes + logistic regression (Makhzani & Frey 2014)",
    ),
    "cae-mnist": (1.14, "CAE, one layer of 1000 units (Rifai et al. 2011)"),
    "dae-mnist": (1.28, "stacked DAE, 3 layers (Vincent et al. 2010): a deeper model than this preset"),
    "sparse-mnist": (None, "no MNIST number for this exact setting"),
    "pixels": (7.2, "logistic regression on raw pixels (as quoted by Makhzani & Frey 2014)"),
}
PRESETS = ("ksparse-mnist", "cae-mnist", "dae-mnist", "sparse-mnist")


def preset_options(name: str, epochs: int | None) -> dict:
    options = dict(get_preset(name).options)
    if epochs is not None:
        if "k_anneal_steps" in options:  # keep the schedule's shape: anneal over the first half of the run
            options["k_anneal_steps"] = round(options["k_anneal_steps"] * epochs / options["epochs"])
        options["epochs"] = epochs
    return options


def train_presets(args: argparse.Namespace) -> dict:
    """Train the presets as a sweep (``vaelab sweep``, see benchmarks/sweeps/feature_quality.json) into
    OUT/PRESET-seed0, one sweep per distinct set of overrides (``--epochs`` rescales the k-sparse schedule alone); a
    run already there is reused when it is this very configuration. Returns each run's sweep entry."""
    groups: dict[str, list[str]] = {}
    for name in args.presets:
        changed = {k: v for k, v in preset_options(name, args.epochs).items() if get_preset(name).options.get(k) != v}
        groups.setdefault(json.dumps({**changed, "device": args.device}, sort_keys=True), []).append(name)
    runs = {}
    for options, names in groups.items():
        spec = {"grid": {"preset": names}, "data": "mnist", "options": json.loads(options)}
        runs.update(run_sweep(parse_spec(spec), args.out, args.engine, args.workers)["runs"])
    for name, r in runs.items():
        if r["status"] != "done":
            raise SystemExit(f"{name}: {r['status']}: {r['error']}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the preset's")
    parser.add_argument("--max-train", type=int, help="fit the probe on a random subset of the training images")
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations of the probe at most")
    parser.add_argument("--C", type=float, help="the probe's C (default: chosen on the validation split)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the probe on raw pixels")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/feature-quality")
    parser.add_argument("--engine", default="local", choices=["local", "ray"], help="where the presets train")
    parser.add_argument("--workers", type=int, default=1, help="presets trained at once (the local engine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    trained = train_presets(args)
    results = []
    for name in args.presets:
        options = preset_options(name, args.epochs)
        run_dir = out / f"{name}-seed0"
        entry = trained[run_dir.name]
        train_s = entry["seconds"] if entry["action"] != "kept" else math.nan
        start = time.perf_counter()
        result = probe(load(run_dir), args.max_train, args.C, args.max_iter, baseline=False, device=args.device)
        results.append(
            {"preset": name, "epochs": options["epochs"], "train_s": train_s, "probe_s": time.perf_counter() - start}
            | result
        )
        print(json.dumps(results[-1]), flush=True)
    if not args.no_baseline:
        splits = probe_data(load(out / f"{args.presets[0]}-seed0").dataset(), args.max_train)
        start = time.perf_counter()
        pixels = fit_probe(
            {s: (x.flatten(1).numpy(), y.numpy()) for s, (x, y) in splits.items()}, args.C, args.max_iter
        )
        results.append(
            {"preset": "pixels", "probe_s": time.perf_counter() - start} | {f"code_{k}": v for k, v in pixels.items()}
        )
    print(
        f"\n{'features':<15}{'epochs':>7}{'train s':>9}{'probe s':>9}{'C':>7}{'error %':>9}{'published %':>13}"
        f"{'gap pp':>8}  published setting"
    )
    for r in results:
        published, setting = PUBLISHED[r["preset"]]
        error = 100 * r["code_error"]
        gap = f"{error - published:+.2f}" if published else "-"
        converged = "" if r["code_converged"] else f" (probe not converged in {r['code_iterations']} iterations)"
        print(
            f"{r['preset']:<15}{r.get('epochs', '-'):>7}{r.get('train_s', math.nan):>9.0f}{r['probe_s']:>9.0f}"
            f"{r['code_C']:>7g}{error:>9.2f}{(published or math.nan):>13.2f}{gap:>8}  {setting}{converged}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
