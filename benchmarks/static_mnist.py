"""The statically binarized MNIST VAE in pythae's reproduction setting, and its test NLL against epochs.

One run of the ``vae-binarized-mnist-pythae`` preset (784-400-40 ReLU, Bernoulli likelihood, Larochelle's
50k/10k/10k split, batch 100, Adam lr 1e-4, lr ×10^(-1/5) from epochs 200 and 350, 500 epochs) is trained in
stages: to 5 epochs, then resumed to 10, 20, 50, 100, 200 and 500 (``--stages``). A resumed run is exactly the run
that went straight on (the schedule depends on the epoch only), so every stage is a point on one run's curve. At
each stage the test NLL is estimated with the IWAE bound at K = ``--curve-k`` on all 10 000 test images (the best
validation epoch so far, as the run keeps it); at the last stage also at each K of ``--k``: 200, the K of pythae's
reproduction (89.78 nats, "NLL (200 IS)" in its examples/scripts/reproducibility/README.md), and 5000, the K the
issue asks for (a tighter bound: lower than the K = 200 figure of the same model).

Interrupted, it goes on where it stopped: finished stages are read back from OUT/curve.json.

Usage:
    VAELAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/static_mnist.py
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/static_mnist.py --stages 1 2 --curve-k 10 --k 20 50
    ... --posterior log-variance --out runs/static-mnist-logvar    (pythae's encoder head: sigma = exp(log_var / 2))
Results: OUT/curve.json (default runs/static-mnist) and a table on stdout; the run itself is OUT/run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vaelab.eval.evaluate import evaluate
from vaelab.presets import get_preset
from vaelab.probability import POSTERIORS
from vaelab.runs import CHECKPOINT, load, load_checkpoint, make_run_config
from vaelab.runs.folder import write_json
from vaelab.training.trainer import resolve_device, train

PRESET = "vae-binarized-mnist-pythae"


def stage(args: argparse.Namespace, epochs: int) -> float:
    """Train the run to ``epochs`` epochs: a new run, or the one there resumed (interrupted or not) on to them; the
    seconds it took."""
    run_dir = args.out / "run"
    start = time.perf_counter()
    if not (run_dir / CHECKPOINT).exists():
        preset = get_preset(PRESET)
        options = {**preset.options, "epochs": epochs, "seed": args.seed, "device": args.device}
        options.update(posterior=args.posterior)  # the preset names no head: diagonal, or the one --posterior names
        train(make_run_config(preset.model, preset.data, options), run_dir)
    else:
        state = load_checkpoint(run_dir / CHECKPOINT)
        if not (state.get("finished") and state["config"]["train"]["epochs"] >= epochs):
            train(None, run_dir, resume=True, epochs=epochs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200, 500])
    parser.add_argument("--curve-k", type=int, default=1000, help="IWAE samples at every stage")
    parser.add_argument("--k", type=int, nargs="+", default=[200, 5000], help="IWAE samples at the last stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--posterior", default="diagonal", choices=POSTERIORS.names(), help="the encoder's head (pythae: log-variance)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/static-mnist"))
    args = parser.parse_args()
    results_file = args.out / "curve.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"preset": PRESET, "rows": []}
    device = resolve_device(args.device)
    for epochs in sorted(args.stages):
        ks = sorted({args.curve_k, *(args.k if epochs == max(args.stages) else [])})
        have = {(r["epochs"], r["k"]) for r in results["rows"]}
        if all((epochs, k) in have for k in ks):
            continue
        train_s = stage(args, epochs)
        run = load(args.out / "run", device)
        val = [r for r in run.metrics() if r.get("split") == "val"]
        best = min(val, key=lambda r: r["loss"])
        for k in ks:
            if (epochs, k) in have:
                continue
            start = time.perf_counter()
            result = evaluate(run, "test", k, str(device))
            results["rows"].append({
                "epochs": epochs,
                "best_epoch": best["epoch"],
                "val_elbo": -best["loss"],
                "k": k,
                "test_nll": result["nll"],
                "test_elbo": result["elbo"],
                "train_s": round(train_s, 1),
                "eval_s": round(time.perf_counter() - start, 1),
            })  # fmt: skip
            train_s = 0.0
            write_json(results_file, results)
    print(f"{'epochs':>6} {'K':>5} {'test NLL':>9} {'test ELBO':>10} {'val ELBO':>9} {'train s':>8} {'eval s':>7}")
    for r in sorted(results["rows"], key=lambda r: (r["epochs"], r["k"])):
        print(
            f"{r['epochs']:>6} {r['k']:>5} {r['test_nll']:>9.2f} {r['test_elbo']:>10.2f} {r['val_elbo']:>9.2f} "
            f"{r['train_s']:>8.0f} {r['eval_s']:>7.0f}"
        )


if __name__ == "__main__":
    main()
