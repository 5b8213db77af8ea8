"""Training throughput: a hand-written PyTorch loop, vaelab's Trainer and pythae's trainer, same VAE, same process.

Every contender trains the same model the same number of steps, with the same optimizer (torch's fused Adam, the one
vaelab's trainer uses; ``--hand-adam default`` gives the hand loop torch's default Adam instead), lr 1e-3, batch 100,
MNIST binarized anew at every draw (``torch.bernoulli``), 54000 training examples (``val_fraction`` 0.1, the same split
for all). ``--model``: ``mlp``, the MLP VAE 784-512-16 (ReLU; encoder 784-512-32 giving mu and softplus(raw) + 1e-4 as
the posterior scale, decoder 16-512-784 giving Bernoulli logits), or ``conv``, the conv VAE (vaelab's conv backbone,
channels 32-64, stride 2, latent 16); loss = summed binary cross-entropy + closed-form Gaussian KL per data point,
averaged over the batch.

    (a) vaelab: ``vaelab.training.trainer.Trainer`` built from ``make_run_config("vae", "mnist", ...)`` into a
        temporary run folder, then ``Trainer.fit()`` exactly as ``vaelab train`` runs it (metrics.jsonl, TensorBoard,
        the progress bar, checkpoints, per-epoch validation, final figures).
    (b) hand: the loop a competent user writes around the same networks (vaelab's encoder and decoder modules, built
        afresh with the same seed): the reparameterization by hand, ``F.binary_cross_entropy_with_logits(
        reduction="sum")``, the KL formula, fused Adam; the data is one float tensor, batches are slices of a
        ``randperm`` per epoch.
    (c) pythae (``--pythae``, if pythae is importable): pythae 0.1.2's ``VAE`` around the same networks (its encoder
        returns mu and log sigma^2 of the same q, its decoder the Bernoulli means) trained by its ``BaseTrainer``
        with the same fused Adam; the time of its ``train_step`` epochs (its loop: DataLoader, model, optimizer,
        ``loss.item()`` each step). pythae cannot binarize anew at each draw: it gets one binarization.

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
                   TensorBoard/metrics files and the end-of-run figures (``--no-figures``: without
                   them). Reported as samples/s of
                   the same training samples, to show what a user waits for. Not timed for either
                   side: reading MNIST, carving the split and building the model (``Trainer()``).
    pythae         the wall time of its ``train_step`` calls, one per epoch (after its ``prepare_training``).
    CPU time       every row once more, as ``time.process_time()`` (CPU seconds of all
                   threads of this process) instead of wall time. On a machine shared with other jobs
                   this is much less disturbed than wall time (it does not count time spent waiting for
                   a core); with more than one thread it also counts OpenMP spin-waiting.

The runs rotate (hand, vaelab, pythae; vaelab, pythae, hand; ...) after an untimed warm-up of each; the table gives
best and median samples/s, and the ratios are the medians of each round's paired ratio (both runs from the same
round, so slow drifts of the machine's load cancel). ``--steps-per-epoch``
shortens a run by training on the first N*batch examples of the training split (every side). All
loops also report the mean training loss of their last epoch: they should agree (same model, data,
optimizer), which shows the two sides do the same work.

Threads: every contender runs with ``--threads`` torch threads (default 1). On a small machine shared with
other jobs, two OpenMP threads that lose their core to another process stall each other at every
parallel region (a 100x784x512 matmul took 24 ms instead of 1.1 ms with a load average of 3 on 2
cores), which swamps what this benchmark measures; more threads suit a quiet machine. The per-step framework
overhead is fixed in time, so fewer threads (longer steps) make the ratio look better and more threads make it look
worse.

Usage:
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/throughput.py
    VAELAB_DATA=/work/shared/data .venv/bin/python benchmarks/throughput.py --model conv --epochs 1 --repeats 5
    VAELAB_DATA=/work/shared/data PYTHONPATH=src /tmp/venv-pythae/bin/python benchmarks/throughput.py --pythae \
        --steps-per-epoch 200 --repeats 7          # pythae in a scratch venv: never a vaelab dependency
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
from rich.console import Console
from rich.table import Table
from torch import Tensor

from vaelab.api import finish
from vaelab.data import load_dataset
from vaelab.data.storage import DeviceSplit
from vaelab.models import build_model
from vaelab.probability.posteriors import MIN_SCALE
from vaelab.runs import make_run_config
from vaelab.training.trainer import Trainer, resolve_device

try:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
except ImportError:  # optional: a benchmark contender, never a dependency
    PythaeVAE = None

LATENT = 16
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {"backbone": "mlp", "hidden": (512,), "activation": "relu"},
    "conv": {"backbone": "conv", "channels": (32, 64), "activation": "relu"},
}
TITLES = {"mlp": "MLP VAE 784-512-16", "conv": "conv VAE 32-64 channels, latent 16"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def networks(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Fresh encoder and decoder of the benchmarked architecture (vaelab's modules, seeded like the Trainer)."""
    torch.manual_seed(args.seed)
    model = build_model("vae", (1, 28, 28), latent_dim=LATENT, **ARCHITECTURES[args.model]).to(device)
    return model.encoder, model.decoder


def timed_result(seconds: float, cpu_seconds: float, samples: int, loss: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_samples_per_s": samples / cpu_seconds,
        "final_train_loss": loss,
    }


# -- (b) the hand-written loop -----------------------------------------------------------------------


def hand_reconstruction(logits: Tensor, x: Tensor) -> Tensor:
    """The hand loop's reconstruction term: the summed binary cross-entropy, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)


def hand_kl(mu: Tensor, std: Tensor) -> Tensor:
    """The hand loop's KL(N(mu, std^2) || N(0, I)), summed over the units and averaged over the batch."""
    return (0.5 * (mu.square() + std.square() - 1).sum() - std.log().sum()) / len(mu)


def hand_train(args: argparse.Namespace, x_train: Tensor, epochs: int, steps: int) -> dict[str, Any]:
    """Train the VAE with a plain loop on ``x_train`` (N, 1, 28, 28); return the timing and the last epoch's loss."""
    device, batch = x_train.device, args.batch_size
    encoder, decoder = networks(args, device)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.lr, fused=True if args.hand_adam == "fused" else None)
    generator = torch.Generator().manual_seed(args.seed)
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
            loss = hand_reconstruction(decoder(z), x) + hand_kl(mu, std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach()
    sync(device)
    return timed_result(
        time.perf_counter() - t0, time.process_time() - c0, epochs * steps * batch, float(epoch_loss) / steps
    )


# -- (c) pythae ---------------------------------------------------------------------------------------


def pythae_train(args: argparse.Namespace, x_train: Tensor, epochs: int, steps: int, root: Path) -> dict[str, Any]:
    """pythae's VAE around the same networks, trained by its BaseTrainer; times its train_step epochs."""
    encoder, decoder = networks(args, x_train.device)

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = encoder

        def forward(self, x: Tensor) -> Any:
            mu, raw = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=2 * (F.softplus(raw) + MIN_SCALE).log())

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = decoder

        def forward(self, z: Tensor) -> Any:
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    model = PythaeVAE(
        PythaeConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
        encoder=Encoder(),
        decoder=Decoder(),
    )
    data = torch.bernoulli(x_train[: steps * args.batch_size], generator=torch.Generator().manual_seed(args.seed))
    config = BaseTrainerConfig(
        output_dir=str(root),
        per_device_train_batch_size=args.batch_size,
        num_epochs=epochs,
        learning_rate=args.lr,
        optimizer_cls="Adam",
        optimizer_params={"fused": True},
        no_cuda=x_train.device.type != "cuda",
        seed=args.seed,
    )
    trainer = BaseTrainer(model, BaseDataset(data, torch.zeros(len(data))), training_config=config)
    trainer.prepare_training()  # what train() does before its epochs: the optimizer, the output folder, callbacks
    sync(x_train.device)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = float("nan")
    for epoch in range(1, epochs + 1):
        loss = trainer.train_step(epoch)
    sync(x_train.device)
    return timed_result(time.perf_counter() - t0, time.process_time() - c0, epochs * steps * args.batch_size, loss)


# -- (a) vaelab's Trainer ----------------------------------------------------------------------------


def vaelab_config(args: argparse.Namespace, epochs: int) -> Any:
    options: dict[str, Any] = dict(
        **ARCHITECTURES[args.model],
        latent_dim=LATENT,
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
    missing = [m for m in ("_train", "_validate", "_checkpoint") if not callable(getattr(trainer, m, None))]
    if missing:  # the timing wraps these methods of the instance; say so plainly if the trainer changed
        raise SystemExit(f"vaelab's Trainer no longer has {', '.join(missing)}: update benchmarks/throughput.py")
    if steps < trainer.steps_per_epoch:  # --steps-per-epoch: train on the first steps*batch examples
        held = trainer.data.splits["train"]  # the first steps*batch examples, held as they were (encoded)
        trainer.data.splits["train"] = DeviceSplit(
            held.data[: steps * args.batch_size], held.encoding, held.shape, *held.value_range
        )
        if trainer.data.train_labels is not None:
            trainer.data.train_labels = trainer.data.train_labels[: steps * args.batch_size]
        trainer.steps_per_epoch, trainer.total_steps = steps, steps * epochs
    parts = ("train", "validate", "checkpoint_in_loop", "checkpoint_other")
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

    sync(device)
    t0 = time.perf_counter()
    trainer.fit()
    if not args.no_figures:
        finish(run_dir)  # the figures, as `vaelab train` draws them after the loop
    sync(device)
    fit = time.perf_counter() - t0

    samples = epochs * steps * args.batch_size
    steps_s = t["train"] - t["validate"] - t["checkpoint_in_loop"]
    steps_cpu = cpu["train"] - cpu["validate"] - cpu["checkpoint_in_loop"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train_records = [r for r in records if r.get("split") == "train"]
    result = timed_result(steps_s, steps_cpu, samples, _last_epoch_loss(train_records))
    own = [r["samples_per_s"] for r in train_records]
    result.update(
        fit_seconds=fit,
        fit_samples_per_s=samples / fit,
        own_samples_per_s=statistics.median(own) if own else float("nan"),
        parts_seconds={k: round(v, 4) for k, v in t.items()},
    )
    return result


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


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    """The median over rounds of a's rate over b's (runs of the same round)."""
    return statistics.median(x[key] / y[key] for x, y in zip(a, b))


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    # the same split and the same training tensor the Trainer will use (seeded), loaded once, untimed
    data = load_dataset(vaelab_config(args, args.epochs).data, args.seed, device, binary_model=True)
    full_steps = len(data.train) // args.batch_size
    steps = min(args.steps_per_epoch or full_steps, full_steps)
    x_train = data.train[: steps * args.batch_size].contiguous()
    assert x_train.shape[1:] == (1, 28, 28) and data.dynamic, "expected grey-level MNIST, dynamically binarized"

    sides = ["hand", "vaelab"] + (["pythae"] if args.pythae else [])
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="vaelab-throughput-") as tmp:
        root = Path(tmp)
        log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)

        def once(side: str, epochs: int, n: int, tag: str) -> dict[str, Any]:
            if side == "hand":
                return hand_train(args, x_train[: n * args.batch_size], epochs, n)
            if side == "pythae":
                return pythae_train(args, x_train, epochs, n, root / f"pythae-{tag}")
            return vaelab_train(args, epochs, n, root, tag)

        log(
            f"{TITLES[args.model]}: warm-up ({args.warmup_steps} steps each), then {args.repeats} rounds of "
            f"{', '.join(sides)}: {args.epochs} epoch(s) x {steps} steps x batch {args.batch_size}, "
            f"{args.threads} thread(s), {device}"
        )
        for side in sides:
            once(side, 1, min(args.warmup_steps, steps), "warmup")
        for r in range(args.repeats):
            for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                runs[side].append(once(side, args.epochs, steps, f"run{r}"))
                log(f"  round {r + 1} {side:7s} {runs[side][-1]['samples_per_s']:9.0f} samples/s")

    rows = {f"{side}": summary([x["samples_per_s"] for x in runs[side]]) for side in sides}
    rows.update({f"{side}_cpu": summary([x["cpu_samples_per_s"] for x in runs[side]]) for side in sides})
    rows["vaelab_fit"] = summary([x["fit_samples_per_s"] for x in runs["vaelab"]])
    ratios = {
        f"{a}/{b}": {
            "wall": paired(runs[a], runs[b], "samples_per_s"),
            "cpu": paired(runs[a], runs[b], "cpu_samples_per_s"),
        }
        for a, b in (("vaelab", "hand"), ("vaelab", "pythae"), ("pythae", "hand"))
        if a in runs and b in runs
    }
    return {
        "config": {
            "model": args.model,
            "epochs": args.epochs,
            "steps_per_epoch": steps,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "device": str(device),
            "repeats": args.repeats,
            "hand_adam": args.hand_adam,
            "torch": torch.__version__,
            "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        },
        "samples_per_s": rows,
        "ratio": ratios,
        "final_train_loss": {side: [x["final_train_loss"] for x in runs[side]] for side in sides},
        "runs": runs,
    }


def print_table(result: dict[str, Any]) -> None:
    c = result["config"]
    table = Table(
        title=f"{TITLES[c['model']]}, MNIST, {c['epochs']} epoch(s) x {c['steps_per_epoch']} steps x "
        f"batch {c['batch_size']}, {c['threads']} thread(s), {c['device']}, torch {c['torch']}, {c['repeats']} rounds"
    )
    for name in ("samples/s", "best (wall)", "median (wall)", "best (CPU)", "median (CPU)"):
        table.add_column(name, justify="left" if name == "samples/s" else "right")
    rows = result["samples_per_s"]
    labels = {"hand": f"hand loop ({c['hand_adam']} Adam)", "vaelab": "vaelab Trainer, steps", "pythae": "pythae"}
    for side, label in labels.items():
        if side in rows:
            s, sc = rows[side], rows[f"{side}_cpu"]
            table.add_row(label, *(f"{v:.0f}" for v in (s["best"], s["median"], sc["best"], sc["median"])))
    f = rows["vaelab_fit"]
    table.add_row("vaelab whole fit()", f"{f['best']:.0f}", f"{f['median']:.0f}", "", "")
    console = Console(width=max(110, Console().width))
    console.print(table)
    losses = result["final_train_loss"]
    console.print(
        "last-epoch mean train loss (nats/image): "
        + "; ".join(f"{side} {', '.join(f'{x:.2f}' for x in v)}" for side, v in losses.items()),
        highlight=False,
    )
    for pair, r in result["ratio"].items():
        console.print(
            f"ratio {pair} (median of paired rounds): {r['wall']:.3f} wall, {r['cpu']:.3f} CPU", highlight=False
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mlp", choices=tuple(ARCHITECTURES), help="mlp (784-512-16) or conv")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=0,
        help="train on the first N*batch examples only (default: the full split, 540 steps)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, rotating the order (default 5)")
    p.add_argument("--warmup-steps", type=int, default=30, help="untimed steps of each contender first (default 30)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for every contender (default 1)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $VAELAB_DATA)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    p.add_argument("--no-figures", action="store_true", help="skip the end-of-run figures in vaelab's whole fit()")
    p.add_argument("--pythae", action="store_true", help="add pythae's trainer (needs pythae importable)")
    p.add_argument(
        "--hand-adam",
        default="fused",
        choices=("fused", "default"),
        help="the hand loop's Adam: fused (vaelab's; the default) or torch's default",
    )
    p.add_argument(
        "--min-ratio",
        type=float,
        default=0.0,
        help="exit with status 1 if the paired median ratio vaelab/hand is below this (e.g. 0.98)",
    )
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.steps_per_epoch < 0 or args.threads < 1:
        p.error("--epochs, --repeats and --threads must be >= 1, --steps-per-epoch >= 0")
    if args.pythae and PythaeVAE is None:
        p.error("--pythae: pythae is not importable by this Python (install it in a scratch venv, see the usage)")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > max(0.5, cores - args.threads):
        print(
            f"note: load average {load:.1f} on {cores} cores: other processes compete for the CPU, so the "
            "numbers are noisy; the CPU-time columns and the paired ratios suffer least",
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
    return 1 if result["ratio"]["vaelab/hand"]["wall"] < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
