"""Kill loop: train a run while killing it at random moments (SIGKILL, SIGTERM, SIGINT), resume it each time, and
check that the finished run's weights, optimizer state and metrics equal those of a run that was never interrupted.

Each cycle starts ``vaelab train`` (the first) or ``vaelab train --resume`` (the others) as a subprocess, waits a
random time drawn uniformly from [--min-wait, --max-wait] seconds, and sends a random signal. Signals that arrive
before the first checkpoint leave a folder holding no run: the next cycle then starts the run again. At the end the
run is resumed to completion and compared, tensor by tensor, with the reference run, and metrics.jsonl is checked
to hold every (split, step) row once and exactly the reference's rows.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_loop.py --kills 50
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_loop.py --kills 20 --devices 2 --model vqvae
Prints one line per kill and a summary (kills survived, exact or not); exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
MODELS = {
    "vae": ["--latent-dim", "4", "--set", "hidden=64"],
    "vqvae": ["--set", "downsample=1", "--set", "hidden_channels=16", "--set", "residual_channels=8",
              "--set", "code_dim=8", "--set", "codebook_size=16", "--set", "restart_after=5"],
}  # fmt: skip


def command(run: Path, args: argparse.Namespace) -> list[str]:
    base = [sys.executable, "-m", "vaelab.cli", "train"]
    if (run / "checkpoint.pt").exists():
        return [*base, "--resume", str(run)]
    options = ["--epochs", str(args.epochs), "--set", f"checkpoint_every={args.checkpoint_every}"]
    options += ["--set", "log_every=10", "--devices", str(args.devices)]
    return [*base, args.model, "--data", "digits", "--out", str(run), *options, *MODELS[args.model]]


def state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def compare(a: Path, b: Path) -> list[str]:
    """What differs between two finished runs (empty: they are the same)."""
    sa, sb = state(a), state(b)
    problems = [f"model.{k}" for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])]
    for group_a, group_b in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        problems += [f"optimizer.{k}" for k in group_a if not torch.equal(group_a[k], group_b[k])]
    rows_a = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    keys_a = [(r["split"], r["step"]) for r in rows_a]
    if len(keys_a) != len(set(keys_a)):
        problems.append("metrics.jsonl repeats a (split, step) row")
    if keys_a != [(r["split"], r["step"]) for r in rows_b]:
        problems.append("metrics.jsonl rows differ from the reference's")
    drop = ("time", "samples_per_s")
    if [{k: v for k, v in r.items() if k not in drop} for r in rows_a] != [
        {k: v for k, v in r.items() if k not in drop} for r in rows_b
    ]:
        problems.append("metrics.jsonl values differ from the reference's")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--model", choices=sorted(MODELS), default="vae")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300, help="long enough that most kills land mid-training")
    p.add_argument("--checkpoint-every", type=int, default=7)
    p.add_argument("--min-wait", type=float, default=2.0, help="seconds after a start (python and torch import)")
    p.add_argument("--max-wait", type=float, default=9.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill-loop-"))
    run, reference = root / "killed", root / "reference"
    subprocess.run(command(reference, args), check=True, capture_output=True)
    survived, failures, exits = 0, [], {}
    for i in range(args.kills):
        proc = subprocess.Popen(command(run, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait, sig = rng.uniform(args.min_wait, args.max_wait), rng.choice(SIGNALS)
        time.sleep(wait)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(sig)
        _, err = proc.communicate()
        step = state(run)["step"] if (run / "checkpoint.pt").exists() else None
        ok = "Traceback" not in err
        failures += [] if ok else [f"kill {i}: a traceback\n{err}"]
        survived += ok and not finished
        if not finished:
            exits[proc.returncode] = exits.get(proc.returncode, 0) + 1
        what = "finished before the signal" if finished else f"{signal.Signals(sig).name} after {wait:.1f}s"
        print(f"kill {i + 1}: {what}, exit {proc.returncode}, checkpoint step {step}", flush=True)
        if finished and step is not None and state(run).get("finished"):
            break
    while not (run / "checkpoint.pt").exists() or not state(run).get("finished"):
        subprocess.run(command(run, args), check=True, capture_output=True)
    problems = compare(run, reference)
    print(f"{survived} kills survived; the finished run {'equals' if not problems else 'differs from'} the reference")
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(exits.items()))
    print(f"exit codes of the killed processes (-N: died of signal N before its handler was installed): {codes}")
    for line in problems + failures:
        print(f"  {line}")
    shutil.rmtree(root)
    sys.exit(1 if problems or failures else 0)


if __name__ == "__main__":
    main()
