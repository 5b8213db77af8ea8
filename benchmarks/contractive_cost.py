"""The cost of the contractive penalty: one training step of a CAE against the same plain autoencoder step.

Each row times a full Adam step (forward, backward, update) on a batch of MNIST-sized inputs (784 pixels,
Bernoulli cross-entropy), median of ``--steps`` after two warm-up steps, with the same weights:

    ae              the one-layer sigmoid autoencoder 784-1000-784, no penalty
    cae closed      + λ‖J‖_F² by the closed form Σ_j σ'(a_j)² Σ_i W_ji² (what `cae` uses for one layer)
    cae exact       + λ‖J‖_F² by the exact batched Jacobian (torch.func vmap over jacfwd), same model
    ae deep         a two-layer sigmoid encoder 784-1000-1000 (no penalty)
    cae deep exact  + λ‖J‖_F² of the two-layer encoder by torch.func (the route every deeper encoder takes)

Usage:
    .venv/bin/python benchmarks/contractive_cost.py                     # batch 100, 1000 units
    .venv/bin/python benchmarks/contractive_cost.py --units 200 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaelab.models import build_model
from vaelab.models.cae import contraction_exact


def step_time(model, x, steps: int, penalty=None) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = penalty(x) if penalty else model.loss(x).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--exact-steps", type=int, default=2, help="steps timed for the (slow) exact routes")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28)
    one = {"latent_dim": args.units, "hidden": (), "code_activation": "sigmoid", "activation": "sigmoid"}
    deep = {**one, "hidden": (args.units,)}

    def exact(model):
        def loss(x):
            h = model.encode(x)
            rec = -model.decode(h).log_prob(x).mean()
            return rec + model.config.contraction * contraction_exact(model.encoder, x, h.shape[-1]).mean()

        return loss

    rows = []
    ae = build_model("ae", (1, 28, 28), **one)
    rows.append(("ae", step_time(ae, x, args.steps)))
    cae = build_model("cae", (1, 28, 28), **one)
    cae.load_state_dict(ae.state_dict())
    rows.append(("cae closed", step_time(cae, x, args.steps)))
    rows.append(("cae exact", step_time(cae, x, args.exact_steps, exact(cae))))
    ae_deep = build_model("ae", (1, 28, 28), **deep)
    rows.append(("ae deep", step_time(ae_deep, x, args.steps)))
    cae_deep = build_model("cae", (1, 28, 28), **deep)
    rows.append(("cae deep exact", step_time(cae_deep, x, args.exact_steps)))
    base = {"cae closed": rows[0][1], "cae exact": rows[0][1], "cae deep exact": rows[3][1]}
    print(f"batch {args.batch}, {args.units} units, {torch.get_num_threads()} threads")
    print(f"{'step':<16}{'ms':>10}{'x plain AE':>12}")
    for name, seconds in rows:
        ratio = f"{seconds / base[name]:.2f}" if name in base else "1"
        print(f"{name:<16}{1000 * seconds:>10.1f}{ratio:>12}")


if __name__ == "__main__":
    main()
