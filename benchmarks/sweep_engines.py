"""Wall time of the 4-point sweep of the tests (a tiny VAE on digits, 1 epoch, latent_dim 2 and 3 × seeds 0 and 1,
each run evaluated) on the local engine with 1 and 2 workers, and on a local Ray instance with 2 CPUs: Ray's overhead
against the local engine. Every sweep starts from an empty folder; the load average is printed beside, since on a
shared machine it moves the numbers more than anything else.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_engines.py                     # local 1, local 2, ray 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_engines.py --engines local:2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from vaelab.sweeps import parse_spec, run_sweep

SPEC = {
    "model": "vae",
    "data": "digits",
    "options": {"epochs": 1, "hidden": [16], "batch_size": 200},
    "grid": {"latent_dim": [2, 3]},
    "seeds": [0, 1],
    "eval": {"eval": {"iw_samples": 8}},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=["local:1", "local:2", "ray:2"], help="ENGINE:WORKERS")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, help="keep the sweeps here (default: a temporary folder)")
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="sweep-engines-"))
    results = []
    for _ in range(args.repeats):
        for item in args.engines:
            engine, _, workers = item.partition(":")
            out = root / f"{engine}-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            start = time.perf_counter()
            status = run_sweep(parse_spec(SPEC), out, engine, int(workers or 1))
            wall = time.perf_counter() - start
            runs = list(status["runs"].values())
            row = {
                "engine": engine,
                "workers": int(workers or 1),
                "wall_s": round(wall, 1),
                "load_before": load,
                "run_s": [round(r["seconds"], 1) for r in runs],
                "done": sum(r["status"] == "done" for r in runs),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| engine | workers | wall s | load average before |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['load_before']:.1f} |")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
