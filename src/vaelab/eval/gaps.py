"""The inference gap of a VAE, split as Cremer, Li & Duvenaud (2018) do: ``vaelab gaps RUN`` writes RUN/gaps.json.

    log p(x) - ELBO(q_phi)  =  [log p(x) - ELBO(q*)]   +   [ELBO(q*) - ELBO(q_phi)]
        inference gap           approximation gap          amortization gap

per test point: q_phi(z|x) is the encoder's posterior, q* the best member of the same family for that point alone
(found by optimizing the ELBO in q's parameters, starting from q_phi, the decoder fixed). log p(x) is exact for the
models registered in ``EXACT`` (linear-Gaussian: then the ELBOs are closed-form too, and KL(q || p(z|x)) is given);
otherwise it is the IWAE bound at a large K, itself a lower bound, so the approximation gap is then an upper bound
on the true one less the remaining IWAE gap. The IWAE bound at ``--k`` is reported beside them.

What a model needs for this is registered per type: ``FAMILIES`` gives the posterior head whose family q belongs to
(which also turns q back into the head's parameters); a model without one is not a VAE and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from vaelab.core.errors import VaelabError
from vaelab.core.progress import Progress
from vaelab.core.registry import TypeRegistry
from vaelab.models import Model
from vaelab.models.linear_gaussian import LinearGaussian, as_multivariate
from vaelab.models.vae import VAE
from vaelab.probability import Posterior, importance_log_weights, log_mean_exp
from vaelab.probability.posteriors import FullCovarianceGaussian
from vaelab.runs import Run, report_name

GAPS_SEED = 0
#: model type -> fn(model) -> the posterior head of q's family (refusing a model it cannot split, in one line)
FAMILIES: TypeRegistry[Callable[[Any], Posterior]] = TypeRegistry("posterior family")
#: model type -> the model, when it has the exact log_marginal(x), exact_posterior(x) and closed-form elbo(x, q)
EXACT: TypeRegistry[Callable[[Any], Any]] = TypeRegistry("exact inference")


@FAMILIES.register(VAE)
def vae_family(model: VAE) -> Posterior:
    """The encoder's head; two stochastic layers are refused (their q is not one Gaussian)."""
    if model.config.inner_latent_dim:
        raise VaelabError("vaelab gaps splits the gap of one Gaussian q(z|x); this VAE has two stochastic layers")
    return model.posterior


@FAMILIES.register(LinearGaussian)
def linear_gaussian_family(model: LinearGaussian) -> Posterior:
    """The encoder's head (fit=sgvb), else full covariance: the E-step's q is the exact posterior."""
    return model.posterior if model.amortized else FullCovarianceGaussian(model.latent_size).to(model.weight.device)


EXACT.register(LinearGaussian)(lambda model: model)


def family_of(model: Model) -> Posterior:
    """The posterior head of q's family for a VAE; any other model is refused in one line."""
    family = FAMILIES.lookup(model)
    if family is None:
        raise VaelabError(
            f"{type(model).__name__} is not a VAE: vaelab gaps needs an encoder q(z|x), a prior p(z) and a decoder "
            "p(x|z) (the VAE family: vae, iwae, beta-vae, ..., or linear-gaussian)"
        )
    return family(model)


def check_options(k: int, large_k: int, steps: int, samples: int, lr: float) -> None:
    """Refuse K < 1 and the other impossible settings, naming the flag."""
    for name, value, least in (
        ("--k", k, 1),
        ("--large-k", large_k, 1),
        ("--steps", steps, 0),
        ("--samples", samples, 1),
    ):
        if value < least:
            raise VaelabError(f"{name} must be >= {least}, got {value}")
    if not lr > 0:
        raise VaelabError(f"--lr must be > 0, got {lr}")


def summary(values: Tensor) -> dict[str, Any]:
    """Mean, standard error of the mean and the per-point values of a (N,) tensor."""
    v = values.detach().double().cpu()
    stderr = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "stderr": stderr, "points": [float(a) for a in v]}


def _mc_elbo(model: Model, x: Tensor, q: Distribution, samples: int) -> Tensor:
    """(1/S) sum_s log p(x, z_s) - log q(z_s|x), z_s ~ q: the ELBO estimated with S reparameterized draws (B,)."""
    log_px_z, log_ratio = importance_log_weights(x, q, model.prior(), model.decode, samples)
    return (log_px_z + log_ratio).mean(0)


def optimize_q(
    model: Model,
    x: Tensor,
    head: Posterior,
    start: Distribution,
    elbo: Callable[[Distribution], Tensor],
    steps: int,
    lr: float,
) -> Distribution:
    """q* per point: the head's parameters for each row of x, from ``start``, after ``steps`` Adam steps (learning
    rate ``lr``, cosine-decayed to 0) on the sum of the points' ELBOs (independent problems; the model's own
    parameters are not touched)."""
    h = head.params_of(start).detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([h], lr=lr)
    # the learning rate decays to 0 on a cosine: Monte Carlo gradients then settle on the optimum instead of around it
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    with Progress(steps, "optimizing q per point") as progress:
        for _ in range(steps):
            loss = -elbo(head(h)).sum()
            (h.grad,) = torch.autograd.grad(loss, [h])
            optimizer.step()
            schedule.step()
            progress.advance()
            progress.status(f"mean ELBO {-float(loss.detach()) / len(x):.3f}")
    return head(h.detach())


def inference_gaps(
    model: Model,
    x: Tensor,
    k: int = 100,
    large_k: int = 5000,
    steps: int = 500,
    lr: float = 0.01,
    samples: int = 16,
    use_exact: bool = True,
) -> dict[str, Any]:
    """The gaps of the rows of x (see the module): ``k`` the IWAE K, ``large_k`` the K of the log p(x) estimate (and
    the draws of a Monte Carlo ELBO) where log p(x) is not exact, ``steps`` and ``lr`` the per-point optimization,
    ``samples`` its draws per step; ``use_exact=False`` takes the Monte Carlo route even where the exact one exists
    (to check one against the other)."""
    head = family_of(model)
    check_options(k, large_k, steps, samples, lr)
    model.eval()
    torch.manual_seed(GAPS_SEED)
    exact = EXACT.lookup(model) if use_exact else None
    exact = exact(model) if exact is not None else None
    with torch.no_grad():
        q = model.encode(x)
        iwae = log_mean_exp(sum(importance_log_weights(x, q, model.prior(), model.decode, k)))
        if exact is not None:
            log_px, elbo = exact.log_marginal(x), exact.elbo(x, q)
        else:
            log_w = sum(importance_log_weights(x, q, model.prior(), model.decode, large_k))
            log_px, elbo = log_mean_exp(log_w), log_w.mean(0)

    def objective(candidate: Distribution) -> Tensor:
        return exact.elbo(x, candidate) if exact is not None else _mc_elbo(model, x, candidate, samples)

    best = optimize_q(model, x, head, q, objective, steps, lr)
    with torch.no_grad():
        elbo_best = exact.elbo(x, best) if exact is not None else _mc_elbo(model, x, best, large_k)
    result: dict[str, Any] = {
        "points": len(x),
        "k": k,
        "log_px_method": "exact" if exact is not None else f"iwae-{large_k}",
        "family": type(head).__name__,
        "steps": steps,
        "lr": lr,
        "samples": samples,
        "log_px": summary(log_px),
        "elbo": summary(elbo),
        "iwae": summary(iwae),
        "elbo_optimized": summary(elbo_best),
        "inference_gap": summary(log_px - elbo),
        "approximation_gap": summary(log_px - elbo_best),
        "amortization_gap": summary(elbo_best - elbo),
    }
    if exact is not None:
        with torch.no_grad():
            posterior = exact.exact_posterior(x)
            result["kl_q_posterior"] = summary(kl_divergence(as_multivariate(q), posterior))
            result["kl_optimized_posterior"] = summary(kl_divergence(as_multivariate(best), posterior))
    return result


def run_gaps(
    run: Run,
    k: int = 100,
    points: int = 100,
    split: str = "test",
    device: str = "cpu",
    data_dir: str | None = None,
    command: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The gaps of the first ``points`` points of a run's split, written to RUN/gaps.json at the defaults, else to
    the name ``gaps_report_name`` gives (options: see ``inference_gaps``); ``command`` is recorded in the report."""
    family_of(run.model)  # refusals before any data is read
    defaults = {"large_k": 5000, "steps": 500, "samples": 16, "lr": 0.01}
    check_options(k, **{key: options.get(key, value) for key, value in defaults.items()})
    if points < 1:
        raise VaelabError(f"--points must be >= 1, got {points}")
    model = run.model.to(device)
    x = run.dataset(device, data_dir).split(split)[:points]
    if len(x) == 0:
        raise VaelabError(f"the {split} split of {run.config.data.name} is empty")
    result = {"split": split, **inference_gaps(model, x, k, **options)}
    if command is None:
        command = f"vaelab gaps {run.path} --k {k} --points {points} --split {split}" + "".join(
            f" --{key.replace('_', '-')} {options[key]}" for key in ("large_k", "steps") if key in options
        )
    return run.write_report(gaps_report_name(k, points, split, **options), result, command)


def gaps_report_name(k: int = 100, points: int = 100, split: str = "test", **options: Any) -> str:
    """gaps.json at the defaults (the first 100 test points, K = 100, ``large_k`` 5000, 500 steps), else keyed by
    what differs: gaps-val-k50-n200-K10000-s100.json."""
    settings = [
        "" if split == "test" else split,
        "" if k == 100 else f"k{k}",
        "" if points == 100 else f"n{points}",
        "" if options.get("large_k", 5000) == 5000 else f"K{options['large_k']}",
        "" if options.get("steps", 500) == 500 else f"s{options['steps']}",
    ]
    return report_name("gaps", *settings)
