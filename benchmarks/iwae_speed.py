"""The IWAE bound against its roofline: vaelab's ``log_likelihood`` against the bare decoder forward pass over the
same number of samples, in the same process, and against pythae's ``get_nll`` on the same weights.

Contenders, each estimating log p(x) with K importance samples for each of ``--points`` test images:

    decoder        the roofline: ``model.decoder(z)`` over points x K latent rows (z drawn once, untimed), in tiles
                   of the rows the bound uses; nothing else (no sampling, no log-likelihood, no reduction).
    vaelab         ``model.log_likelihood(x, K)``: the encoder once per point, the draws in groups, tiles of decoder
                   outputs fitted to the cache, x broadcast, the summed Bernoulli log-likelihood, a running logsumexp.
    vaelab plain   the route before issue 21, for comparison: ``importance_log_weights`` in chunks of 2^25 decoder
                   outputs with torch's ``Independent(Bernoulli)`` log-likelihood, all K weights kept, one logsumexp.
    pythae         pythae 0.1.2's ``VAE.get_nll(x, K, batch_size)`` on the same networks (its encoder and decoder
                   wrap vaelab's: the same q(z|x) and p(x|z)), if pythae is importable. It loops over the points, copies
                   each one batch_size times and runs the encoder on every copy.

The contenders run in turn, in a rotating order, ``--repeats`` rounds after one untimed warm-up round; the table gives
the median samples/s (points x K / seconds) and the median of each round's ratio to the decoder (paired: both come
from the same round, so load changes between rounds cancel). Times are CPU seconds of this process
(``time.process_time``), which another job on a shared machine disturbs far less than wall time; ``--wall`` uses the
wall clock. The NLLs of all contenders are printed: on the same weights they must agree within their Monte Carlo
error.

Usage (pythae in a scratch venv, never a vaelab dependency):
    python -m venv /tmp/venv-pythae && /tmp/venv-pythae/bin/pip install torch==2.13.0 pythae rich safetensors \\
        matplotlib tensorboard
    PYTHONPATH=src /tmp/venv-pythae/bin/python benchmarks/iwae_speed.py --run runs/static-mnist --k 1000
    .venv/bin/python benchmarks/iwae_speed.py                     # untrained 784-400-40 weights, random images
    .venv/bin/python benchmarks/iwae_speed.py --chunks 16384 131072 1048576 8388608   # tile sizes
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent

from vaelab.core.threads import set_threads
from vaelab.models import build_model
from vaelab.models.vae import VAE
from vaelab.probability import bounds
from vaelab.probability.bounds import importance_log_weights, log_mean_exp
from vaelab.runs import load

try:
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig as PythaeConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
except ImportError:  # optional: a benchmark contender, never a dependency
    PythaeVAE = None


def pythae_model(model: VAE) -> nn.Module:
    """pythae's VAE around vaelab's networks: the same q(z|x) (mean, log variance) and p(x|z) (probabilities)."""
    shape, latent = tuple(model.data_shape), model.config.latent_dim

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            q = self.model.encode(x).base_dist
            return ModelOutput(embedding=q.loc, log_covariance=2 * q.scale.log())

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.model.decoder(z)).view(-1, *shape))

    config = PythaeConfig(input_dim=shape, latent_dim=latent, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder()).eval()


def plain_bound(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The route before issue 21: chunks of 2^25 outputs, torch's Bernoulli, all K weights, one logsumexp."""

    def decode(z: torch.Tensor):
        logits = model.decode(z).base_dist.logits
        return Independent(Bernoulli(logits=logits, validate_args=False), len(model.data_shape))

    a, b = importance_log_weights(x, model.encode(x), model.prior(), decode, k, budget=bounds.DEFAULT_BUDGET)
    return log_mean_exp(a + b)


def decoder_pass(model: VAE, n: int, rows: int) -> Callable[[], None]:
    """The bare decoder over n latent rows in tiles of ``rows``."""
    z = torch.randn(min(rows, n), model.config.latent_dim)

    def run() -> None:
        done = 0
        while done < n:
            m = min(len(z), n - done)
            model.decoder(z[:m])
            done += m

    return run


def measure(contenders: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]):
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    values: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = clock()
            value = contenders[name]()
            if r > 0:  # round 0 warms up
                seconds[name].append(clock() - start)
                if value is not None:
                    values[name].append(float(value))
    return seconds, values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a trained run (its weights and test images); default: untrained 784-400-40")
    p.add_argument("--points", type=int, default=100, help="test images (default 100)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--chunks", type=int, nargs="*", default=[], help="also time these tile sizes (decoder outputs)")
    p.add_argument("--pythae-batch", type=int, default=100, help="get_nll's batch_size (its default, 100)")
    p.add_argument("--no-pythae", action="store_true")
    p.add_argument("--no-plain", action="store_true", help="skip the route before issue 21")
    p.add_argument("--wall", action="store_true", help="wall-clock seconds instead of process CPU seconds")
    args = p.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)
    if args.run:
        run = load(args.run)
        model = run.model.eval()
        x = run.dataset().test[: args.points]
    else:
        model = build_model("vae", (1, 28, 28), backbone="mlp", hidden=(400,), latent_dim=40, activation="tanh")
        model.eval()
        x = (torch.rand(args.points, 1, 28, 28) < 0.15).float()
    n = len(x) * args.k
    chunk = bounds.chunk_outputs()
    rows = max(1, chunk // x[0].numel())
    contenders: dict[str, Callable[[], object]] = {
        "decoder": decoder_pass(model, n, rows),
        "vaelab": lambda: model.log_likelihood(x, args.k).mean(),
    }
    for c in args.chunks:
        contenders[f"vaelab, tiles of {c}"] = lambda c=c: bounds.importance_weighted_bound(
            x, model.encode(x), model.prior(), model.decode, args.k, chunk=c
        ).mean()
        contenders[f"decoder, tiles of {c}"] = decoder_pass(model, n, max(1, c // x[0].numel()))
    if not args.no_plain:
        contenders["vaelab plain (before)"] = lambda: plain_bound(model, x, args.k).mean()
    if PythaeVAE is not None and not args.no_pythae:
        pv = pythae_model(model)
        contenders["pythae get_nll"] = lambda: pv.get_nll(x, n_samples=args.k, batch_size=args.pythae_batch)
    elif not args.no_pythae:
        print("note: pythae is not importable here; run this with a Python that has it to add it", file=sys.stderr)
    clock = time.perf_counter if args.wall else time.process_time
    print(
        f"{len(x)} points x K={args.k}, {torch.get_num_threads()} thread(s), tiles of {chunk} decoder outputs "
        f"({rows} rows), {args.repeats} rounds, {'wall' if args.wall else 'CPU'} time; torch {torch.__version__}",
        flush=True,
    )
    with torch.no_grad():
        seconds, values = measure(contenders, args.repeats, clock)
    roof = seconds["decoder"]
    print(f"{'contender':32s} {'samples/s':>12s} {'/ decoder':>10s}  NLL (nats, mean over the points)")
    for name, s in seconds.items():
        rate = n / statistics.median(s)
        ratio = statistics.median(roof[i] / s[i] for i in range(len(s)))
        nll = f"{-statistics.mean(values[name]):.3f}" if values[name] else "-"
        print(f"{name:32s} {rate:12,.0f} {ratio:10.3f}  {nll}")
    if "pythae get_nll" in seconds:
        ratio = statistics.median(seconds["pythae get_nll"][i] / seconds["vaelab"][i] for i in range(args.repeats))
        print(f"vaelab / pythae (speed, paired median): {ratio:.2f}")
    if not math.isfinite(statistics.mean(values["vaelab"])):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
