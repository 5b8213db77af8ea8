"""Where the training step's time goes: the hand loop's formulas and vaelab's loss, piece by piece, on one model.

The throughput benchmark (``throughput.py``) compares whole loops. This one builds one ``Trainer`` exactly as that
benchmark does (the MLP VAE 784-512-16 or the conv VAE, dynamically binarized MNIST, batch 100, fused Adam) and times
single training steps on the trainer's own networks, optimizer and batches, switching the variant at every step:

    hand            the hand loop's formulas (``throughput.hand_train``): encoder, chunk, softplus, z = mu + sigma
                    eps, ``hand_reconstruction`` (cross-entropy with ``reduction="sum"``), ``hand_kl``, Adam
    + posterior     q(z|x) = ``model.posterior_of(x)`` and z = ``q.rsample()``; the rest by hand
    + KL            and the KL by ``closed_form_kl(q, model.prior())`` (the registered rule)
    + likelihood    and the reconstruction term as ``-model.decode(z).log_prob(x).mean()``
    model.loss      the VAE's whole ``loss`` (the estimator, the regularizer hook, the named terms)
    Trainer._step   and the trainer's step around it (autocast, the gradient scaler, the LR schedule)

and, apart from the steps, one epoch's batches of 200 steps drawn both ways: the hand loop's (a ``randperm``, indexing
the float images, ``torch.bernoulli``) and the trainer's ``train_batches`` (the same, on uint8 rows, with
``index_select`` and [u < p]), alternating, ``--epochs`` times each.

Each variant updates the same weights, so all of them see the same sizes, the same memory and the same state of the
machine; switching at every step (in an order that alternates) makes slow drifts of the machine's load fall on all
variants alike. The table gives the median wall time of a step and its ratio to the hand formulas' median.

Usage:
    VAELAB_DATA=/work/shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_breakdown.py --steps 6000
    ... --model conv --steps 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
import throughput  # the same configuration, Trainer and hand-loop formulas as the throughput benchmark
from throughput import hand_kl, hand_reconstruction

from vaelab.probability import closed_form_kl
from vaelab.probability.posteriors import MIN_SCALE


def variants(trainer: throughput.Trainer) -> dict[str, Callable[[Tensor], None]]:
    model, optimizer = trainer.model, trainer.optimizer
    encoder, decoder = model.encoder, model.decoder

    def update(loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def hand(x: Tensor) -> None:
        mu, raw = encoder(x).chunk(2, dim=-1)
        std = F.softplus(raw) + MIN_SCALE
        z = mu + std * torch.randn_like(std)
        update(hand_reconstruction(decoder(z), x) + hand_kl(mu, std))

    def pieces(kl: bool, likelihood: bool) -> Callable[[Tensor], None]:
        def step(x: Tensor) -> None:
            q = model.posterior_of(x)
            z = q.rsample()
            if likelihood:
                reconstruction = -model.decode(z).log_prob(x).mean()
            else:
                reconstruction = hand_reconstruction(decoder(z), x)
            if kl:
                divergence = closed_form_kl(q, model.prior()).mean()
            else:
                divergence = hand_kl(q.base_dist.loc, q.base_dist.scale)
            update(reconstruction + divergence)

        return step

    def loss(x: Tensor) -> None:
        update(model(x, step=trainer.step).total)

    return {
        "hand": hand,
        "+ posterior": pieces(kl=False, likelihood=False),
        "+ KL": pieces(kl=True, likelihood=False),
        "+ likelihood": pieces(kl=True, likelihood=True),
        "model.loss": loss,
        "Trainer._step": trainer._step,
    }


def batch_costs(trainer: throughput.Trainer, epochs: int, steps: int = 200) -> tuple[float, float]:
    """Median seconds per batch of the hand loop's draw and of the trainer's ``train_batches``, over ``epochs``
    alternating epochs of ``steps`` batches each."""
    images, batch = trainer.data.train.contiguous(), 100
    generator = torch.Generator().manual_seed(0)
    hand, ours = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(images), generator=generator)
        for i in range(steps):
            torch.bernoulli(images[perm[i * batch : (i + 1) * batch]])
        hand.append((time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for _, _x in zip(range(steps), trainer.data.train_batches(batch, generator)):
            pass
        ours.append((time.perf_counter() - start) / steps)
    return statistics.median(hand), statistics.median(ours)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp", choices=tuple(throughput.ARCHITECTURES))
    p.add_argument("--steps", type=int, default=3000, help="timed steps in all, shared by the variants")
    p.add_argument("--epochs", type=int, default=20, help="epochs of 200 batches drawn each way (default 20)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $VAELAB_DATA)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = argparse.Namespace(
        model=args.model, batch_size=100, lr=1e-3, seed=0, val_fraction=0.1, device="cpu", data_dir=args.data_dir
    )
    with tempfile.TemporaryDirectory(prefix="vaelab-breakdown-") as tmp:
        trainer = throughput.Trainer(throughput.vaelab_config(options, 1), Path(tmp), torch.device("cpu"))
        batches = [x for _, x in zip(range(100), trainer.data.train_batches(100, torch.Generator().manual_seed(0)))]
        runs = variants(trainer)
        names = list(runs)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # untimed warm-up
            runs[name](batches[0])
        for i in range(args.steps):
            turn = i % len(names)
            name = names[turn] if (i // len(names)) % 2 else names[len(names) - 1 - turn]
            start = time.perf_counter()
            runs[name](batches[i % len(batches)])
            seconds[name].append(time.perf_counter() - start)
        drawn = batch_costs(trainer, args.epochs)
    hand = statistics.median(seconds["hand"])
    print(
        f"{throughput.TITLES[args.model]}, batch 100, {args.threads} thread(s), {args.steps} steps shared by "
        f"{len(names)} variants; torch {torch.__version__}"
    )
    print(f"{'variant':16s} {'ms/step':>8s} {'/ hand':>7s}")
    for name in names:
        median = statistics.median(seconds[name])
        print(f"{name:16s} {median * 1000:8.3f} {median / hand:7.3f}")
    print(f"a batch drawn: hand loop {drawn[0] * 1000:.3f} ms, Trainer.train_batches {drawn[1] * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
