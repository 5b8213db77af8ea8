"""Dead-code restart against none: the same VQ-VAE, seed and data, restart_after = 0 vs N.

The codebook starts random (no k-means initialisation), the regime where codebooks collapse: a few codes win
the first batches and the others, never picked, never move. With restart, a code unused for N steps is moved
onto a current encoder output. Reported on the test split: codes in use / K, perplexity of the code histogram,
reconstruction MSE, and the bits/dim bound with a uniform prior over the codes and (``--prior-epochs``) with a
gated PixelCNN prior fitted to the training codes. The likelihood is Bernoulli on dynamically binarized
images (test images binarized once), so the bound is one on a discrete distribution; MSE is against those
binary test images.

    VAELAB_DATA=../shared/data .venv/bin/python benchmarks/vq_restart.py --data mnist fashion-mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from vaelab.data import DataConfig, load_dataset
from vaelab.eval.codes import codebook_usage_epoch
from vaelab.eval.evaluate import evaluate_model
from vaelab.models import build_model
from vaelab.runs import make_run_config, save_config, save_weights
from vaelab.training.prior import train_prior


def run(args: argparse.Namespace, data_name: str, restart_after: int) -> dict:
    torch.manual_seed(args.seed)
    data = load_dataset(DataConfig(data_name), args.seed, binary_model=True)
    data = dataclasses.replace(data, train=data.train[: args.train_size], val=data.val[: args.train_size // 10])
    model = build_model(
        "vqvae",
        data.shape,
        codebook_size=args.codebook_size,
        code_dim=args.code_dim,
        hidden_channels=args.hidden_channels,
        residual_channels=args.hidden_channels // 2,
        kmeans_init=False,
        restart_after=restart_after,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    start, step, usage = time.perf_counter(), 0, []
    for _ in range(args.epochs):
        model.train()
        for x in data.train_batches(args.batch_size, generator):
            loss = model.loss(x, step)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            step += 1
        usage.append(codebook_usage_epoch(model, data, step)["codebook_usage"])
    seconds = time.perf_counter() - start
    result = evaluate_model(model.eval(), data, "test")
    row = {
        "data": data_name,
        "restart_after": restart_after,
        "steps": step,
        "train_seconds": round(seconds, 1),
        "usage_per_epoch": usage,
        **{k: result[k] for k in ("codes_in_use", "codebook_usage", "codebook_perplexity", "mse")},
        "reconstruction_nats": result["reconstruction_discrete"],
        "bits_per_dim_uniform_prior": result["bits_per_dim_uniform_prior"],
    }
    if args.prior_epochs:  # the model is saved as a run so that train-prior can read its codes
        run_dir = Path(tempfile.mkdtemp(prefix="vq-restart-"))
        config = make_run_config("vqvae", data_name, {"seed": args.seed, "epochs": 1})
        save_config(run_dir, dataclasses.replace(config, model_config=model.config, data_spec=model.data))
        save_weights(run_dir, model)
        options = {"channels": args.prior_channels, "layers": args.prior_layers, "epochs": args.prior_epochs}
        prior = train_prior(run_dir, {**options, "batch_size": 64, "seed": args.seed})
        test_nll = evaluate_model(prior.model, prior.dataset(), "test")["nll"]
        dims = math.prod(data.shape) * math.log(2)
        row["prior_nll"] = test_nll
        row["bits_per_dim"] = (result["reconstruction_discrete"] + test_nll) / dims
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["mnist"])
    p.add_argument("--train-size", type=int, default=20000, help="training images (the first of the split)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--codebook-size", type=int, default=512)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--hidden-channels", type=int, default=64)
    p.add_argument("--restart-after", type=int, default=100, help="steps unused before a restart (the 'with' run)")
    p.add_argument("--prior-epochs", type=int, default=0, help="also fit a PixelCNN prior (0: uniform prior only)")
    p.add_argument("--prior-channels", type=int, default=32)
    p.add_argument("--prior-layers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.data:
        for restart in (0, args.restart_after):
            rows.append(run(args, name, restart))
            print(json.dumps(rows[-1]), flush=True)
    prior = args.prior_epochs > 0
    print(
        "\n| data | dead-code restart | codes in use / K | perplexity | test MSE | bits/dim (uniform prior) |"
        + (" bits/dim (PixelCNN prior) |" if prior else "")
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if prior else ""))
    for r in rows:
        restart = f"after {r['restart_after']} steps" if r["restart_after"] else "off"
        line = (
            f"| {r['data']} | {restart} | {r['codes_in_use']} / {args.codebook_size} "
            f"({100 * r['codebook_usage']:.0f}%) | {r['codebook_perplexity']:.1f} | {r['mse']:.4f} "
            f"| {r['bits_per_dim_uniform_prior']:.4f} |"
        )
        print(line + (f" {r['bits_per_dim']:.4f} |" if prior else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
