"""The ``vaelab`` command: train, eval, gaps, predict, probe, grad-variance, disentanglement, traverse, latents,
sample, train-prior, sweep, aggregate, models, datasets, presets.

Every bad input surfaces as a VaelabError, printed as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vaelab.api import finish, sweep, train_prior
from vaelab.core.config import parse_assignments
from vaelab.core.errors import Interrupted, VaelabError
from vaelab.core.threads import ThreadsWarning, check_threads, set_threads
from vaelab.core.version import VERSION
from vaelab.data import DATASETS
from vaelab.eval import evaluate, probe
from vaelab.eval.disentanglement import disentanglement_report_name, run_disentanglement
from vaelab.eval.evaluate import DEFAULT_IW_SAMPLES, eval_report_name, evaluate_run, write_eval
from vaelab.eval.features import probe_settings
from vaelab.eval.gaps import gaps_report_name, run_gaps
from vaelab.eval.gradient_variance import gradient_stats, mean_squared_z
from vaelab.eval.sequences import REPEAT_LAST, predict, prediction_report_name
from vaelab.models import MODELS
from vaelab.presets import get_preset, presets
from vaelab.runs import TrainConfig, load, make_run_config, report_name, stale_reports
from vaelab.sweeps import ENGINES
from vaelab.sweeps.aggregate import aggregate
from vaelab.sweeps.spec import value_text
from vaelab.training.distributed import end_process, joined_group, launched
from vaelab.training.prior import PRIOR_TRAIN_DEFAULTS
from vaelab.training.trainer import resolve_device, train
from vaelab.viz import LATENT_FIGURES, REPORT_FIGURES, TRAVERSAL_FIGURES, save_samples
from vaelab.viz.sequences import rollout_figures

console = Console()

# flags that are shorthands for config keys (`--set` reaches every key)
SHORTHANDS = {
    "data_dir": "data.data_dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "latent_dim": "model.latent_dim",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "devices": "train.devices",
    "precision": "train.precision",
    "threads": "train.threads",
}


def cmd_train(args: argparse.Namespace) -> None:
    given = {key: getattr(args, key) for key in SHORTHANDS if getattr(args, key) is not None}
    launch = launched()
    if launch is not None and args.devices is not None and args.devices != launch.world:
        raise VaelabError(
            f"--devices {args.devices} disagrees with the launcher's WORLD_SIZE={launch.world}; drop --devices "
            "(the launcher decides the processes)"
        )
    if args.resume:
        if args.model or set(given) - {"epochs", "threads"} or args.set or args.data or args.out or args.preset:
            raise VaelabError(
                "--resume continues a run with its own config.json; give no model or options with it "
                "(only --epochs N, to train it on to N epochs in all, and --threads N)"
            )
        run_dir = train(None, args.resume, resume=True, epochs=args.epochs, threads=args.threads)
        run = finish(run_dir)
        if run is not None:
            for stale in stale_reports(run_dir):  # reports (and a VQ prior) of the weights before the resume
                console.print(f"stale: {stale.path} ({stale.why}); refresh it: {stale.command}", soft_wrap=True)
    else:
        model, data, options = args.model, args.data, {}
        if args.preset:
            preset = get_preset(args.preset)
            if model and model != preset.model:
                raise VaelabError(f"preset {preset.name!r} trains {preset.model!r}, not {model!r}; drop one of them")
            model, data, options = preset.model, data or preset.data, dict(preset.options)
        if not model:
            raise VaelabError(f"name a model to train (choose from: {', '.join(MODELS.names())}), --preset or --resume")
        options.update({SHORTHANDS[k]: v for k, v in given.items()})
        options.update(parse_assignments(args.set))
        config = make_run_config(model, data or "digits", options)
        run_dir = train(config, args.out)
        run = finish(run_dir)
    if run is not None:  # rank 0 of a launcher's group, or the only process
        console.print(f"next: vaelab eval {run_dir}", soft_wrap=True)


def cmd_eval(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    result = evaluate_run(run, args.split, args.iw_samples, device, args.data_dir)
    table = Table(
        title=f"{run.config.model} on {run.config.data.name} ({args.split}, {result['num_examples']} examples)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int) and key != "num_examples":
            table.add_row(key, str(value))
    console.print(table)
    if "kl_per_dim" in result:
        kls = " ".join(f"{v:.2f}" for v in result["kl_per_dim"])
        console.print(f"KL per latent dimension (nats): {kls}")
    if "iwae_samples_per_s" in result:
        console.print(f"IWAE bound: {result['iwae_samples_per_s']:,.0f} samples/s (K={result['iw_samples']})")
    if result.get("posterior_collapsed") and any(k.startswith("codebook_usage") for k in result):  # a VQ model
        console.print(
            "[yellow]warning: codebook collapse: every test image is coded with a single code on some level, so the "
            "codes carry no information about x. Keep dead-code restart on (--set restart_after=100), k-means "
            "initialisation (--set kmeans_init=true) and EMA updates (--set ema=true)[/]"
        )
    elif result.get("posterior_collapsed"):
        console.print(
            f"[yellow]warning: posterior collapse: only {result['active_units']} of {result['latent_dim']} latent "
            "units are active (the others' posterior means vary over x with variance <= 0.01): they copy the prior and "
            "carry no information about x. Try KL warm-up (--set kl_warmup_steps=N), free bits (--set free_bits=0.5), "
            "a smaller beta, or importance-weighted training (model iwae)[/]"
        )
    write_eval(run, result)  # after the table: numbers that cannot be written are still seen
    console.print(f"written: {run.path / eval_report_name(result)}", soft_wrap=True)


def cmd_gaps(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    options = {"large_k": args.large_k, "steps": args.steps}
    r = run_gaps(run, args.k, args.points, args.split, str(device), args.data_dir, **options)
    table = Table(
        title=f"inference gaps: {run.config.model} on {run.config.data.name} ({r['points']} {args.split} "
        f"points, log p(x): {r['log_px_method']})"
    )
    for column in ("nats per point", "mean", "stderr"):
        table.add_column(column, justify="left" if column == "nats per point" else "right")
    for key in (
        "log_px",
        "iwae",
        "elbo",
        "elbo_optimized",
        "inference_gap",
        "approximation_gap",
        "amortization_gap",
        "kl_q_posterior",
    ):
        if key in r:
            table.add_row(
                f"iwae (K={r['k']})" if key == "iwae" else key, f"{r[key]['mean']:.3f}", f"{r[key]['stderr']:.3f}"
            )
    console.print(table)
    for path in REPORT_FIGURES.get("gaps")(run.path / "figures", r):
        console.print(f"written: {path}")
    console.print(f"written: {run.path / gaps_report_name(args.k, args.points, args.split, **options)}", soft_wrap=True)


def cmd_predict(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    baselines = {Path(b).name: load(b, device) for b in args.baseline}
    result = predict(run, baselines, args.horizon, args.context, args.samples, args.split, device, args.data_dir)
    table = Table(
        title=f"jumpy prediction MSE on {run.config.data.name} ({args.split}, {result['num_sequences']} sequences, "
        f"{result['context']} frames observed, {result['samples']} imagined futures)"
    )
    table.add_column("horizon", justify="right")
    names = [n for n in result["results"] if n != REPEAT_LAST] + [REPEAT_LAST]
    labels = {"model": f"{run.path.name} (tdvae)"}
    for name in names:
        table.add_column(labels.get(name, name), justify="right")
    for i, h in enumerate(result["horizons"]):
        table.add_row(str(h), *(f"{result['results'][n]['mse'][i]:.5f}" for n in names))
    console.print(table)
    for name in names[:-1]:
        r = result["results"][name]
        nll = " ".join(f"{v:.2f}" for v in r["nll"])
        console.print(f"{labels.get(name, name)}: ELBO per frame {r['elbo_per_frame']:.3f} nats; NLL by horizon: {nll}")
    x = run.dataset(device, args.data_dir).split(args.split)[:4]
    for path in rollout_figures(run.path / "figures", run.model, x, result["context"], len(result["horizons"])):
        console.print(f"written: {path}")
    console.print(f"written: {run.path / prediction_report_name(run.model, result)}", soft_wrap=True)


def cmd_probe(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    result = probe(run, args.max_train, args.C, args.max_iter, not args.no_baseline, device, args.data_dir)
    table = Table(
        title=f"linear probe: {run.config.model} on {run.config.data.name} "
        f"({result['num_train']} training / {result['num_test']} test examples)"
    )
    for column in ("features", "dims", "C", "test error", "train error", "iterations"):
        table.add_column(column, justify="left" if column == "features" else "right")
    for name, key, dims in (("codes", "code", result["code_dim"]), ("raw pixels", "pixel", result.get("pixel_dim"))):
        if f"{key}_error" in result:
            note = "" if result[f"{key}_converged"] else " (not converged)"
            table.add_row(
                name,
                str(dims),
                f"{result[f'{key}_C']:g}",
                f"{100 * result[f'{key}_error']:.2f}%",
                f"{100 * result[f'{key}_train_error']:.2f}%",
                f"{result[f'{key}_iterations']}{note}",
            )
    console.print(table)
    name = report_name("probe", *probe_settings(args.max_train, args.C, args.max_iter, not args.no_baseline))
    console.print(f"written: {run.path / name}", soft_wrap=True)


def cmd_grad_variance(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    if args.batch_size < 1 or args.mc_samples < 1:
        raise VaelabError(f"--batch-size and --mc-samples must be >= 1, got {args.batch_size} and {args.mc_samples}")
    x = run.dataset(device, args.data_dir).test[: args.batch_size]
    torch.manual_seed(args.seed)
    variants = [("reparameterization", False), ("score-function", False)]
    if args.mc_samples >= 2:
        variants.append(("score-function", True))
    stats = [
        gradient_stats(run.model, x, args.repeats, gradient_estimator=e, baseline=b, mc_samples=args.mc_samples)
        for e, b in variants
    ]
    table = Table(
        title=f"gradient variance per element, {run.config.model} on {len(x)} test points, "
        f"L={args.mc_samples}, {args.repeats} repeats"
    )
    table.add_column("parameter", no_wrap=True)
    table.add_column("elements", justify="right")
    for s in stats:
        table.add_column(s.label.replace("reparameterization", "reparam").replace("-function", ""), justify="right")
    table.add_column("ratio", justify="right")
    table.caption = "variance per element; ratio = score / reparam"
    names = list(stats[0].variance)
    for name in [*names, "total"]:
        var = [s.total_variance(names if name == "total" else [name]) for s in stats]
        count = sum(stats[0].variance[n].numel() for n in (names if name == "total" else [name]))
        ratio = f"{var[1] / var[0]:.3g}" if var[0] > 0 else "-"
        table.add_row(name, str(count), *(f"{v / count:.3g}" for v in var), ratio)
    console.print(table)
    console.print(
        f"unbiasedness: mean squared z-score between the two estimators' average gradients = "
        f"{mean_squared_z(stats[0], stats[1]):.2f} (about 1 when both estimate the same gradient)"
    )


def cmd_disentanglement(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    metrics = [m for item in args.metrics for m in item.split(",") if m] or None
    factors = [f for item in args.factors for f in item.split(",") if f] or None
    entry = run_disentanglement(run, args.seed, metrics, factors, str(device), args.data_dir, args.quick)
    table = Table(title=f"disentanglement: {run.config.model} on {run.config.data.name} (seed {args.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in entry["scores"].items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"factors: {', '.join(entry['factors'])}")
    name = disentanglement_report_name(args.seed, args.quick, metrics, entry["factors"] if factors else None)
    console.print(f"written: {run.path / name}", soft_wrap=True)


def cmd_traverse(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    draw = TRAVERSAL_FIGURES.lookup(run.model)
    if draw is None:
        raise VaelabError(f"{run.config.model} has no continuous latent space to traverse (traversals are for VAEs)")
    out = Path(args.out) if args.out else run.path / "figures"
    data = run.dataset(device, args.data_dir)
    for path in draw(out, run.model, data, run.path / "metrics.jsonl", args.index):
        console.print(f"written: {path}")


def cmd_latents(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    run = load(args.run, device)
    draw = LATENT_FIGURES.lookup(run.model)
    if draw is None:
        raise VaelabError(
            f"{run.config.model} has no continuous latent space with a prior to draw (latent figures are for VAEs); "
            f"see {run.path / 'figures'}"
        )
    out = Path(args.out) if args.out else run.path / "figures"
    for path in draw(out, run.model, run.dataset(device, args.data_dir)):
        console.print(f"written: {path}")


def cmd_sample(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise VaelabError(f"-n must be >= 1, got {args.n}")
    device = resolve_device(args.device)
    run = load(args.run, device)
    torch.manual_seed(args.seed)
    samples = run.model.sample(args.n)
    write = DATASETS.entry(run.config.data.name).meta.get("write_samples")  # a table: rows in its own units
    if write is not None:
        out = Path(args.out) if args.out else run.path / "figures" / "samples.csv"
        console.print(f"written: {write(run.config.data, samples, out)}")
        return
    samples = samples.reshape(args.n, *run.model.data_shape)
    out = save_samples(Path(args.out) if args.out else None, run.path / "figures", samples)
    console.print(f"written: {out}")


def cmd_train_prior(args: argparse.Namespace) -> None:
    options: dict = {
        k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed") if getattr(args, k) is not None
    }
    options.update(parse_assignments(args.set))
    if args.device != "auto":
        options["device"] = args.device
    if args.data_dir:
        options["data_dir"] = args.data_dir
    console.print(f"training the code prior of {args.run}")
    run = train_prior(args.run, **options)
    result = evaluate(run.prior, "test")
    console.print(
        f"prior NLL of the test codes: {result['nll']:.2f} nats per image (uniform prior: {result['nll_uniform']:.2f})"
    )
    console.print(f"written: {run.prior.path}, {run.path / 'figures' / 'prior_samples.png'}")
    console.print(f"next: vaelab sample {run.path}; vaelab eval {run.path}")


def cmd_sweep(args: argparse.Namespace) -> None:
    status = sweep(args.spec, args.out, args.engine, args.workers, args.ray_address)
    counts = Counter(r["status"] for r in status["runs"].values())
    console.print(f"sweep {args.out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), soft_wrap=True)
    console.print(f"next: vaelab aggregate {args.out}", soft_wrap=True)
    if counts.get("done", 0) < len(status["runs"]):
        raise VaelabError(f"{len(status['runs']) - counts['done']} runs did not finish; see {args.out}/sweep.json")


def cmd_aggregate(args: argparse.Namespace) -> None:
    metrics = [m for item in args.metrics for m in item.split(",") if m] or None
    result = aggregate(args.sweep, args.csv, metrics)
    table = Table(title=f"sweep {args.sweep}: mean ± sd over seeds {', '.join(map(str, result.seeds))}")
    for column in (*result.keys, "metric", "n", "mean ± sd", *(f"seed {s}" for s in result.seeds)):
        table.add_column(column, justify="left" if column in (*result.keys, "metric") else "right")
    for r in result.rows:
        spread = f"{r.mean:.4g} ± {r.sd:.2g}" if r.sd is not None else f"{r.mean:.4g}"
        cells = [f"{r.by_seed[s]:.4g}" if s in r.by_seed else "-" for s in result.seeds]
        table.add_row(
            *(value_text(r.values.get(k, "")) for k in result.keys), r.metric, str(len(r.by_seed)), spread, *cells
        )
    console.print(table)
    for name, why in result.missing.items():
        console.print(f"[yellow]not in the table: {name} ({why})[/]", soft_wrap=True)
    console.print(f"written: {result.csv}, {len(result.figures)} figures in {args.sweep}/figures", soft_wrap=True)


def _listing(title: str, entries) -> None:
    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("description")
    for e in entries:
        table.add_row(e.name, e.description)
    console.print(table)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help names it already or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = (
            action.default is None
            or action.default is False
            or action.default == []
            or action.default is argparse.SUPPRESS
        )
        shown = not empty and "default" not in text
        if shown and (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            text += " (default: %(default)s)"
        return text


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for a command that computes."""
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the CPUs this process may use, or $OMP_NUM_THREADS); "
        "lower it on a machine shared with other jobs",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What every command that loads a run takes: the run folder, the device, a moved data folder, threads."""
    p.add_argument("run", help="a run folder written by vaelab train")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")
    p.add_argument(
        "--data-dir",
        help="where the run's data set lives now, if it moved (default: the folder recorded at training; if that "
        "is gone, $VAELAB_DATA)",
    )
    add_threads_argument(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vaelab", description="Autoencoders and VAEs: train, evaluate, look.", formatter_class=HelpFormatter
    )
    p.add_argument("--version", action="version", version=f"vaelab {VERSION}")
    p.set_defaults(threads=None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tc = TrainConfig()

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    t = command("train", "train a model into a run folder")
    t.add_argument("model", nargs="?", help=f"one of: {', '.join(MODELS.names())}")
    t.add_argument(
        "--data",
        metavar="NAME|PATH",
        help=f"one of: {', '.join(DATASETS.names())} (default: digits, or the preset's), or your own: a folder of "
        "images, an .npy/.npz array or a .csv table",
    )
    t.add_argument(
        "--data-dir", help="folder with the data files (default: $VAELAB_DATA, else download into the cache)"
    )
    t.add_argument("--epochs", type=int, help=f"passes over the training set (default: {tc.epochs}, or the preset's)")
    t.add_argument("--batch-size", type=int, help=f"examples per step and process (default: {tc.batch_size})")
    t.add_argument("--latent-dim", type=int, help="size of the code z (default: the model's, e.g. 16 for vae)")
    t.add_argument("--lr", type=float, help=f"Adam's learning rate (default: {tc.lr:g})")
    t.add_argument("--seed", type=int, help=f"seed of the weights, the data order and the noise (default: {tc.seed})")
    t.add_argument("--out", help="run folder (default: runs/MODEL-DATA-TIME)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"where to train (default: {tc.device})")
    t.add_argument("--devices", type=int, help=f"data-parallel processes (DDP) (default: {tc.devices})")
    t.add_argument(
        "--precision",
        choices=["32", "bf16-mixed", "16-mixed"],
        help=f"32-bit floats, or mixed precision with bf16 or fp16 autocast (default: {tc.precision})",
    )
    add_threads_argument(t)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, repeatable")
    t.add_argument("--preset", help="a shipped configuration (see `vaelab presets`); flags override it")
    t.add_argument(
        "--resume", metavar="RUN", help="continue an interrupted run exactly where it stopped (with --epochs: train on)"
    )
    t.set_defaults(func=cmd_train)

    e = command("eval", "evaluate a run on a split and write its report (eval.json for the test set at K=1000)")
    add_run_arguments(e)
    e.add_argument("--iw-samples", type=int, help=f"K of the IWAE log-likelihood bound (default: {DEFAULT_IW_SAMPLES})")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split to evaluate")
    e.set_defaults(func=cmd_eval)

    gp = command("gaps", "VAEs: log p(x), ELBO, IWAE_K; the inference gap as approximation + amortization")
    add_run_arguments(gp)
    gp.add_argument("--k", type=int, default=100, help="K of the IWAE bound reported")
    gp.add_argument("--points", type=int, default=100, help="the first N points of the split")
    gp.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split to evaluate")
    gp.add_argument("--large-k", type=int, default=5000, help="K of the log p(x) estimate where it is not exact")
    gp.add_argument("--steps", type=int, default=500, help="Adam steps of the per-point q")
    gp.set_defaults(func=cmd_gaps)

    pd = command("predict", "sequence models: jumpy prediction error by horizon, rollout strip and GIF")
    add_run_arguments(pd)
    pd.add_argument("--baseline", action="append", default=[], metavar="RUN", help="another tdvae run to compare")
    pd.add_argument("--horizon", type=int, help="predict 1..H frames ahead (default: the model's max_jump)")
    pd.add_argument("--context", type=int, help="observed frames (default: the sequence length minus the horizon)")
    pd.add_argument("--samples", type=int, default=16, help="imagined futures per sequence")
    pd.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split to predict")
    pd.set_defaults(func=cmd_predict)

    pr = command("probe", "linear probe: logistic regression on a run's codes, raw pixels beside it")
    add_run_arguments(pr)
    pr.add_argument("--max-train", type=int, help="fit on this many random training examples (default: all)")
    pr.add_argument("--C", type=float, help="inverse L2 strength (default: the best of 0.001..1 on the val split)")
    pr.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations at most")
    pr.add_argument("--no-baseline", action="store_true", help="skip the probe on raw pixels")
    pr.set_defaults(func=cmd_probe)

    g = command("grad-variance", "VAEs: per-parameter gradient variance, reparameterization vs score function")
    add_run_arguments(g)
    g.add_argument("--repeats", type=int, default=100, help="gradient draws per estimator")
    g.add_argument("--batch-size", type=int, default=100, help="test points in the fixed batch")
    g.add_argument("--mc-samples", type=int, default=2, help="L draws per point; >= 2 adds the baseline column")
    g.add_argument("--seed", type=int, default=0, help="seed of the draws")
    g.set_defaults(func=cmd_grad_variance)

    dm = command("disentanglement", "BetaVAE, FactorVAE, MIG, DCI, SAP scores, written as a report of the run")
    add_run_arguments(dm)
    dm.add_argument("--seed", type=int, default=0, help="seed of the metrics' sampling")
    dm.add_argument("--metrics", action="append", default=[], help="betavae,factorvae,mig,dci,sap (default: all)")
    dm.add_argument("--factors", action="append", default=[], help="factor names, comma-separated (default: all)")
    dm.add_argument("--quick", action="store_true", help="about a tenth of the samples: a quicker, rougher estimate")
    dm.set_defaults(func=cmd_disentanglement)

    tv = command("traverse", "VAEs: latent traversals (PNG, GIF), KL per unit over training")
    add_run_arguments(tv)
    tv.add_argument("--index", type=int, default=0, help="the test image to traverse around")
    tv.add_argument("--out", help="folder for the figures (default: RUN/figures)")
    tv.set_defaults(func=cmd_traverse)

    la = command("latents", "latent figures: 2-D manifold, codes by label, interpolations")
    add_run_arguments(la)
    la.add_argument("--out", help="folder for the PNGs (default: RUN/figures)")
    la.set_defaults(func=cmd_latents)

    s = command("sample", "draw from a generative model's prior (images as a PNG grid, other data as .npy)")
    add_run_arguments(s)
    s.add_argument("-n", type=int, default=64, help="how many samples")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws")
    s.add_argument(
        "--out", help="file to write (default: RUN/figures/samples.png, or samples.npy for data that are not images)"
    )
    s.set_defaults(func=cmd_sample)

    tp = command("train-prior", "VQ models: fit a gated PixelCNN prior over the frozen run's codes")
    add_run_arguments(tp)
    defaults = PRIOR_TRAIN_DEFAULTS
    tp.add_argument("--epochs", type=int, help=f"passes over the codes (default: {defaults['epochs']})")
    tp.add_argument("--batch-size", type=int, help=f"code grids per step (default: {defaults['batch_size']})")
    tp.add_argument("--lr", type=float, help=f"Adam's learning rate (default: {defaults['lr']:g})")
    tp.add_argument("--seed", type=int, help="seed of the prior's weights and data order (default: 0)")
    tp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="prior channels, layers, kernel")
    tp.set_defaults(func=cmd_train_prior)

    sw = command("sweep", "train and evaluate every point of a grid over seeds, locally or on Ray")
    sw.add_argument("spec", help="a JSON (or YAML) file: model|preset, data, options, grid, seeds, eval, resources")
    sw.add_argument("--out", required=True, help="the sweep's folder: one run folder per point, sweep.json")
    sw.add_argument("--engine", default="local", choices=ENGINES.names(), help="where the runs execute")
    sw.add_argument("--workers", type=int, default=1, help="runs at once (local; a local Ray instance's CPUs)")
    sw.add_argument("--ray-address", help="the Ray cluster to join (HOST:PORT, ray://HOST:PORT, auto); default: local")
    sw.set_defaults(func=cmd_sweep)

    ag = command("aggregate", "a sweep's reports in one table (CSV), mean ± sd over seeds, figures")
    ag.add_argument("sweep", help="the sweep's folder (vaelab sweep --out)")
    ag.add_argument("--csv", help="the table's CSV file (default: SWEEP/aggregate.csv)")
    ag.add_argument("--metrics", action="append", default=[], help="metric names or prefixes, e.g. eval/ (default all)")
    ag.set_defaults(func=cmd_aggregate)

    command("models", "list the models").set_defaults(func=lambda a: _listing("models", MODELS))
    command("datasets", "list the data sets").set_defaults(func=lambda a: _listing("data sets", DATASETS))
    command("presets", "list the shipped presets").set_defaults(func=lambda a: _listing("presets", presets().values()))
    return p


def _terminated(signum: int, frame: object) -> None:
    raise Interrupted("terminated (SIGTERM)", 143)


def use_threads(threads: int | None) -> None:
    """Apply the thread policy to this process (``--threads``, else the default); warn once, on one line, when the
    count is more than the CPUs this process may use."""
    if threads is not None:
        message = check_threads(threads)
        if message is not None:
            Console(stderr=True, soft_wrap=True).print(f"[yellow]warning: {escape(message)}[/]", highlight=False)
    warnings.filterwarnings("ignore", category=ThreadsWarning)  # said once above; the trainer would repeat it
    set_threads(threads)


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if joined_group():  # a rank of a launcher's group (torchrun, srun): see end_process
        end_process(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        use_threads(args.threads)
        args.func(args)
    except Interrupted as e:
        Console(stderr=True, soft_wrap=True).print(f"vaelab: {escape(str(e))}", highlight=False)
        return e.exit_code
    except VaelabError as e:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]vaelab: error:[/] {escape(str(e))}", highlight=False)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (eval, metrics, ...): nothing to save
        Console(stderr=True).print("vaelab: interrupted (Ctrl-C)")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
