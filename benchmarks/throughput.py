"""Training throughput: vaelab's Trainer against a hand-written PyTorch loop, same VAE, same process.

Both sides train the same model the same number of steps: an MLP VAE 784-512-16 (ReLU, encoder
784-512-32 giving mu and softplus(raw) + 1e-4 as the posterior scale, decoder 16-512-784 giving
Bernoulli logits), loss = summed binary cross-entropy + closed-form Gaussian KL per data point,
averaged over the batch, Adam (lr 1e-3), batch 100, MNIST binarized anew at every draw
(``torch.bernoulli``), 54000 training examples (``val_fraction`` 0.1, the same split for both).

    (a) vaelab: ``vaelab.training.trainer.Trainer`` built from ``make_run_config("vae", "mnist",
        backbone="mlp", hidden=(512,), latent_dim=16, ...)`` into a temporary run folder, then
        ``Trainer.fit()`` exactly as ``vaelab train`` runs it (metrics.jsonl, TensorBoard, the rich
        progress bar when stderr is a terminal, checkpoints, per-epoch validation, final figures).
    (b) hand: the loop a competent user writes: two nn.Sequential, the reparameterization by hand,
        ``F.binary_cross_entropy_with_logits(reduction="sum")``, the KL formula, ``torch.optim.Adam``;
        the data is one float tensor, batches are slices of a ``randperm`` per epoch.

vaelab's trainer uses torch's fused Adam (one C++ pass over all parameters; on CPU it takes about a
third off each step); the hand loop uses the default Adam, as a minimal loop does. ``--hand-fused``
gives the hand loop the fused Adam too, which isolates the trainer's own per-step overhead.

What is timed (wall clock, ``time.perf_counter``; on CUDA after a synchronize):

    hand           the whole loop over all epochs: randperm, indexing, bernoulli, forward, backward,
                   Adam. Not the data loading or the model construction.
    vaelab steps   the wall time of ``Trainer._train`` (the epoch/step loop, everything the trainer
                   does per step: autocast, GradScaler, LR scheduler, loss-term accumulation, progress
                   bar, logging every ``log_every`` steps) MINUS the time spent inside ``_validate``
                   and ``_checkpoint`` calls made from that loop, measured by wrapping those methods
                   on the instance. This is the like-for-like number: the hand loop validates and
                   checkpoints nothing. The headline ratio is vaelab steps / hand.
    vaelab fit     the wall time of the whole ``Trainer.fit()``: also validation, checkpoints (one
                   at the start, every ``checkpoint_every`` steps, one per epoch, one at the end),
                   TensorBoard/metrics files and the end-of-run figures. Reported as samples/s of
                   the same training samples, to show what a user waits for. Not timed for either
                   side: reading MNIST, carving the split and building the model (``Trainer()``).
    vaelab own     the median ``samples_per_s`` of the train records in metrics.jsonl (the trainer's
                   own rate per ``log_every`` interval; an interval holding a checkpoint is slower, which
                   the median ignores).
    CPU time       "hand" and "vaelab steps" once more, as ``time.process_time()`` (CPU seconds of all
                   threads of this process) instead of wall time. On a machine shared with other jobs
                   this is much less disturbed than wall time (it does not count time spent waiting for
                   a core); with more than one thread it also counts OpenMP spin-waiting.

The runs alternate (hand, vaelab, vaelab, hand, ...) after an untimed warm-up of each, and best
(fastest run, the least disturbed by other processes) and median are reported. ``--steps-per-epoch``
shortens a run by training on the first N*batch examples of the training split (both sides). Both
loops also report the mean training loss of their last epoch: they should agree (same model, data,
optimizer), which shows the two sides do the same work.

Threads: both loops run with ``--threads`` torch threads (default 1). On a small machine shared with
other jobs, two OpenMP threads that lose their core to another process stall each other at every
parallel region (a 100x784x512 matmul took 24 ms instead of 1.1 ms with a load average of 3 on 2
cores), which swamps what this benchmark measures; ``--threads 0`` uses torch's default on a quiet
machine. The per-step framework overhead is fixed in time, so fewer threads (longer steps) make the
ratio look better and more threads make it look worse.

Usage:
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/throughput.py
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/throughput.py --epochs 1 --repeats 3 --json
    .venv/bin/python benchmarks/throughput.py --data-dir /work/shared/data --steps-per-epoch 200 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.api import finish
from vaelab.data import load_dataset
from vaelab.probability.posteriors import MIN_SCALE
from vaelab.runs import make_run_config
from vaelab.training.trainer import Trainer, resolve_device

LATENT, HIDDEN, PIXELS = 16, 512, 784


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- (b) the hand-written loop -----------------------------------------------------------------------


def hand_train(
    x_train: Tensor, epochs: int, steps: int, batch: int, lr: float, seed: int, fused: bool = False
) -> dict[str, Any]:
    """Train the VAE with a plain loop on ``x_train`` (N, 784); return the timing and the last epoch's loss."""
    device = x_train.device
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(PIXELS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT)).to(device)
    decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PIXELS)).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr, fused=fused or None)
    generator = torch.Generator().manual_seed(seed)
    n = len(x_train)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        epoch_loss = torch.zeros((), device=device)
        for i in range(steps):
            x = torch.bernoulli(x_train[perm[i * batch : (i + 1) * batch]])
            mu, raw = encoder(x).chunk(2, dim=-1)
            std = F.softplus(raw) + MIN_SCALE
            z = mu + std * torch.randn_like(std)
            reconstruction = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum") / batch
            kl = (0.5 * (mu.square() + std.square() - 1).sum() - std.log().sum()) / batch
            loss = reconstruction + kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach()
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    samples = epochs * steps * batch
    return {
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_samples_per_s": samples / cpu_seconds,
        "final_train_loss": float(epoch_loss) / steps,
    }


# -- (a) vaelab's Trainer ----------------------------------------------------------------------------


def vaelab_config(args: argparse.Namespace, epochs: int) -> Any:
    options: dict[str, Any] = dict(
        backbone="mlp",
        hidden=(HIDDEN,),
        latent_dim=LATENT,
        activation="relu",
        likelihood="bernoulli",
        binarize="dynamic",
        val_fraction=args.val_fraction,
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        precision="32",
    )
    if args.data_dir:
        options["data_dir"] = args.data_dir
    return make_run_config("vae", "mnist", options)


def _timed(fn: Callable[..., Any], device: torch.device, record: Callable[[float, float], None]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            sync(device)
            record(time.perf_counter() - t0, time.process_time() - c0)

    return wrapper


def vaelab_train(args: argparse.Namespace, epochs: int, steps: int, root: Path, tag: str) -> dict[str, Any]:
    """Build a Trainer (untimed setup), then time fit() and its parts; see the module docstring."""
    run_dir = root / tag
    run_dir.mkdir(parents=True)
    device = resolve_device(args.device)
    trainer = Trainer(vaelab_config(args, epochs), run_dir, device)  # reads data, builds the model: untimed
    missing = [m for m in ("_train", "_validate", "_checkpoint", "_finish") if not callable(getattr(trainer, m, None))]
    if missing:  # the timing wraps these methods of the instance; say so plainly if the trainer changed
        raise SystemExit(f"vaelab's Trainer no longer has {', '.join(missing)}: update benchmarks/throughput.py")
    if steps < trainer.steps_per_epoch:  # --steps-per-epoch: train on the first steps*batch examples
        trainer.data.train = trainer.data.train[: steps * args.batch_size]
        if trainer.data.train_labels is not None:
            trainer.data.train_labels = trainer.data.train_labels[: steps * args.batch_size]
        trainer.steps_per_epoch, trainer.total_steps = steps, steps * epochs
    parts = ("train", "validate", "checkpoint_in_loop", "checkpoint_other", "finish")
    t = dict.fromkeys(parts, 0.0)  # wall seconds
    cpu = dict.fromkeys(parts, 0.0)  # process CPU seconds
    in_loop = [False]

    def add(key: str) -> Callable[[float, float], None]:
        def record(seconds: float, cpu_seconds: float) -> None:
            t[key] += seconds
            cpu[key] += cpu_seconds

        return record

    def add_checkpoint(seconds: float, cpu_seconds: float) -> None:
        add("checkpoint_in_loop" if in_loop[0] else "checkpoint_other")(seconds, cpu_seconds)

    train_inner = _timed(trainer._train, device, add("train"))

    def train_wrapped(monitor: Any) -> None:
        in_loop[0] = True
        try:
            train_inner(monitor)
        finally:
            in_loop[0] = False

    trainer._train = train_wrapped
    trainer._validate = _timed(trainer._validate, device, add("validate"))
    trainer._checkpoint = _timed(trainer._checkpoint, device, add_checkpoint)
    trainer._finish = _timed(trainer._finish, device, add("finish"))

    sync(device)
    t0 = time.perf_counter()
    trainer.fit()
    finish(run_dir)  # the figures, as `vaelab train` draws them after the loop
    sync(device)
    fit = time.perf_counter() - t0

    samples = epochs * steps * args.batch_size
    steps_s = t["train"] - t["validate"] - t["checkpoint_in_loop"]
    steps_cpu = cpu["train"] - cpu["validate"] - cpu["checkpoint_in_loop"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train_records = [r for r in records if r.get("split") == "train"]
    own = [r["samples_per_s"] for r in train_records]
    return {
        "seconds": steps_s,
        "samples_per_s": samples / steps_s,
        "cpu_seconds": steps_cpu,
        "cpu_samples_per_s": samples / steps_cpu,
        "fit_seconds": fit,
        "fit_samples_per_s": samples / fit,
        "own_samples_per_s": statistics.median(own) if own else float("nan"),
        "parts_seconds": {k: round(v, 4) for k, v in t.items()},
        "final_train_loss": _last_epoch_loss(train_records),
    }


def _last_epoch_loss(records: list[dict[str, Any]]) -> float:
    """The mean train loss over the last epoch, from the per-interval records (weighted by steps)."""
    if not records:
        return float("nan")
    last = records[-1]["epoch"]
    total = weight = 0.0
    previous = max([r["step"] for r in records if r["epoch"] < last], default=0)
    for r in records:
        if r["epoch"] == last:
            total += r["loss"] * (r["step"] - previous)
            weight += r["step"] - previous
            previous = r["step"]
    return total / weight


# -- the benchmark -----------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"best": max(values), "median": statistics.median(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    # the same split and the same training tensor the Trainer will use (seeded), loaded once, untimed
    data = load_dataset(vaelab_config(args, args.epochs).data, args.seed, device, binary_model=True)
    full_steps = len(data.train) // args.batch_size
    steps = min(args.steps_per_epoch or full_steps, full_steps)
    x_train = data.train.reshape(len(data.train), -1)[: full_steps * args.batch_size].contiguous()
    assert x_train.shape[1] == PIXELS and data.dynamic, "expected grey-level MNIST, dynamically binarized"
    x_train = x_train[: steps * args.batch_size] if steps < full_steps else x_train

    hand: list[dict[str, Any]] = []
    vae: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vaelab-throughput-") as tmp:
        root = Path(tmp)
        log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
        log(
            f"warm-up ({args.warmup_steps} steps each), then {args.repeats} x (hand, vaelab): "
            f"{args.epochs} epoch(s) x {steps} steps x batch {args.batch_size}, {args.threads} thread(s), {device}"
        )
        hand_train(x_train, 1, min(args.warmup_steps, steps), args.batch_size, args.lr, args.seed, args.hand_fused)
        vaelab_train(args, 1, min(args.warmup_steps, steps), root, "warmup")
        for r in range(args.repeats):
            order = ("hand", "vaelab") if r % 2 == 0 else ("vaelab", "hand")
            for side in order:
                if side == "hand":
                    hand.append(
                        hand_train(x_train, args.epochs, steps, args.batch_size, args.lr, args.seed, args.hand_fused)
                    )
                    log(f"  round {r + 1} hand:   {hand[-1]['samples_per_s']:9.0f} samples/s")
                else:
                    vae.append(vaelab_train(args, args.epochs, steps, root, f"run{r}"))
                    v = vae[-1]
                    log(
                        f"  round {r + 1} vaelab: {v['samples_per_s']:9.0f} samples/s steps, "
                        f"{v['fit_samples_per_s']:.0f} fit, parts {v['parts_seconds']}"
                    )

    rows = {
        "hand": summary([x["samples_per_s"] for x in hand]),
        "vaelab_steps": summary([x["samples_per_s"] for x in vae]),
        "vaelab_fit": summary([x["fit_samples_per_s"] for x in vae]),
        "vaelab_own": summary([x["own_samples_per_s"] for x in vae]),
        "hand_cpu": summary([x["cpu_samples_per_s"] for x in hand]),
        "vaelab_steps_cpu": summary([x["cpu_samples_per_s"] for x in vae]),
    }
    h, hc = rows["hand"], rows["hand_cpu"]
    from rich.console import Console

    return {
        "config": {
            "epochs": args.epochs,
            "steps_per_epoch": steps,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "device": str(device),
            "repeats": args.repeats,
            "torch": torch.__version__,
            "progress_bar": Console(stderr=True).is_terminal,
            "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        },
        "samples_per_s": rows,
        "ratio": {k: rows["vaelab_steps"][k] / h[k] for k in h},
        "ratio_fit": {k: rows["vaelab_fit"][k] / h[k] for k in h},
        "ratio_cpu": {k: rows["vaelab_steps_cpu"][k] / hc[k] for k in hc},
        "final_train_loss": {
            "hand": [x["final_train_loss"] for x in hand],
            "vaelab": [x["final_train_loss"] for x in vae],
        },
        "runs": {"hand": hand, "vaelab": vae},
    }


ROWS = (
    ("hand", "hand-written loop", "hand"),
    ("vaelab_steps", "vaelab Trainer, steps", "hand"),
    ("vaelab_fit", "vaelab Trainer, whole fit()", "hand"),
    ("vaelab_own", "vaelab metrics.jsonl", "hand"),
    ("hand_cpu", "hand-written loop, CPU time", "hand_cpu"),
    ("vaelab_steps_cpu", "vaelab steps, CPU time", "hand_cpu"),
)


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = result["config"]
    table = Table(
        title=f"MLP VAE 784-512-16, MNIST, {c['epochs']} epoch(s) x {c['steps_per_epoch']} steps x "
        f"batch {c['batch_size']}, {c['threads']} thread(s), {c['device']}, torch {c['torch']}"
    )
    table.add_column("samples/s")
    for name in ("best", "median", "/hand best", "/hand median"):
        table.add_column(name, justify="right")
    rows = result["samples_per_s"]
    for key, label, base in ROWS:
        s, b = rows[key], rows[base]
        table.add_row(
            label,
            f"{s['best']:.0f}",
            f"{s['median']:.0f}",
            f"{s['best'] / b['best']:.3f}",
            f"{s['median'] / b['median']:.3f}",
        )
    console = Console(width=max(100, Console().width))
    console.print(table)
    losses = result["final_train_loss"]
    console.print(
        f"last-epoch mean train loss (nats/image): hand {', '.join(f'{x:.2f}' for x in losses['hand'])}; "
        f"vaelab {', '.join(f'{x:.2f}' for x in losses['vaelab'])}",
        highlight=False,
    )
    r, rc = result["ratio"], result["ratio_cpu"]
    console.print(
        f"ratio vaelab/hand, training steps: best {r['best']:.3f}, median {r['median']:.3f} (wall); "
        f"best {rc['best']:.3f}, median {rc['median']:.3f} (CPU time); target >= 0.95",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default 2)")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=0,
        help="train on the first N*batch examples only (default: the full split, 540 steps)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each loop, alternating (default 3)")
    p.add_argument("--warmup-steps", type=int, default=30, help="untimed steps of each loop first (default 30)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help=f"torch threads for both loops (default 1; 0: torch's default, {torch.get_num_threads()} here)",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $VAELAB_DATA)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    p.add_argument(
        "--hand-fused",
        action="store_true",
        help="give the hand loop vaelab's fused Adam too: isolates the framework's own per-step overhead",
    )
    p.add_argument(
        "--min-ratio",
        type=float,
        default=0.0,
        help="exit with status 1 if the best-of ratio vaelab/hand is below this (e.g. 0.95)",
    )
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.steps_per_epoch < 0 or args.threads < 0:
        p.error("--epochs and --repeats must be >= 1, --steps-per-epoch and --threads >= 0")
    args.threads = args.threads or torch.get_num_threads()
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > max(0.5, cores - args.threads):
        print(
            f"note: load average {load:.1f} on {cores} cores: other processes compete for the CPU, so the "
            "numbers are noisy (and with more than one thread, OpenMP waits inflate both loops)",
            file=sys.stderr,
        )
    if not args.data_dir and not os.environ.get("VAELAB_DATA"):
        print(
            "note: neither --data-dir nor $VAELAB_DATA is set; vaelab will use (or download to) its cache",
            file=sys.stderr,
        )
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 1 if result["ratio"]["best"] < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
