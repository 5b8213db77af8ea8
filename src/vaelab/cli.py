"""The ``vaelab`` command: train, eval, predict, probe, grad-variance, disentanglement, traverse, latents, sample,
train-prior, models, datasets, presets.

Every bad input surfaces as a VaelabError, printed as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vaelab.api import finish, train_prior
from vaelab.core.config import parse_assignments
from vaelab.core.errors import Interrupted, VaelabError
from vaelab.data import DATASETS
from vaelab.eval import evaluate, probe
from vaelab.eval.disentanglement import run_disentanglement
from vaelab.eval.evaluate import evaluate_run, write_eval
from vaelab.eval.gradient_variance import gradient_stats, mean_squared_z
from vaelab.eval.sequences import REPEAT_LAST, predict
from vaelab.models import MODELS
from vaelab.presets import get_preset, presets
from vaelab.runs import load, make_run_config
from vaelab.training.trainer import resolve_device, train
from vaelab.viz import LATENT_FIGURES, TRAVERSAL_FIGURES, save_images
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
}


def cmd_train(args: argparse.Namespace) -> None:
    given = {key: getattr(args, key) for key in SHORTHANDS if getattr(args, key) is not None}
    if args.resume:
        if args.model or set(given) - {"epochs"} or args.set or args.data or args.out or args.preset:
            raise VaelabError(
                "--resume continues a run with its own config.json; give no model or options with it "
                "(only --epochs N, to train it on to N epochs in all)"
            )
        run_dir = train(None, args.resume, resume=True, epochs=args.epochs)
        run = finish(run_dir)
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
    console.print(f"written: {run.path / 'eval.json'}")


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
    console.print(f"written: {run.path / 'prediction.json'}")


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
    console.print(f"written: {run.path / 'probe.json'}")


def cmd_grad_variance(args: argparse.Namespace) -> None:
    run = load(args.run)
    if args.batch_size < 1 or args.mc_samples < 1:
        raise VaelabError(f"--batch-size and --mc-samples must be >= 1, got {args.batch_size} and {args.mc_samples}")
    x = run.dataset().test[: args.batch_size]
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
    console.print(f"written: {run.path / 'eval.json'} (key: disentanglement)")


def cmd_traverse(args: argparse.Namespace) -> None:
    run = load(args.run)
    draw = TRAVERSAL_FIGURES.lookup(run.model)
    if draw is None:
        raise VaelabError(f"{run.config.model} has no continuous latent space to traverse (traversals are for VAEs)")
    out = Path(args.out) if args.out else run.path / "figures"
    data = run.dataset(data_dir=args.data_dir)
    for path in draw(out, run.model, data, run.path / "metrics.jsonl", args.index):
        console.print(f"written: {path}")


def cmd_latents(args: argparse.Namespace) -> None:
    run = load(args.run)
    draw = LATENT_FIGURES.lookup(run.model)
    if draw is None:
        raise VaelabError(
            f"{run.config.model} has no continuous latent space with a prior to draw (latent figures are for VAEs); "
            f"see {run.path / 'figures'}"
        )
    out = Path(args.out) if args.out else run.path / "figures"
    for path in draw(out, run.model, run.dataset(data_dir=args.data_dir)):
        console.print(f"written: {path}")


def cmd_sample(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise VaelabError(f"-n must be >= 1, got {args.n}")
    run = load(args.run)
    torch.manual_seed(args.seed)
    images = run.model.sample(args.n)
    out = Path(args.out) if args.out else run.path / "figures" / "samples.png"
    write = DATASETS.entry(run.config.data.name).meta.get("write_samples")  # a table: rows in its own units
    if write is not None:
        console.print(f"written: {write(run.config.data, images, out)}")
        return
    save_images(out, images.reshape(args.n, *run.model.data_shape), f"{args.n} samples from the prior")
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


def _listing(title: str, entries) -> None:
    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("description")
    for e in entries:
        table.add_row(e.name, e.description)
    console.print(table)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What every command that reads a run's data takes: the run folder, the device, a moved data folder."""
    p.add_argument("run")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-dir", help="where the run's data set lives now, if it moved")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaelab", description="Autoencoders and VAEs: train, evaluate, look.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model into a run folder")
    t.add_argument("model", nargs="?", help=f"one of: {', '.join(MODELS.names())}")
    t.add_argument(
        "--data",
        metavar="NAME|PATH",
        help=f"one of: {', '.join(DATASETS.names())} (default digits), or your own: a folder of images, an .npy/.npz "
        "array or a .csv table",
    )
    t.add_argument("--data-dir", help="folder with the data files (else $VAELAB_DATA, else download)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run folder (default runs/MODEL-DATA-TIME)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--devices", type=int, help="data-parallel processes (DDP)")
    t.add_argument("--precision", choices=["32", "bf16-mixed", "16-mixed"])
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, repeatable")
    t.add_argument("--preset", help="a shipped configuration (see `vaelab presets`); flags override it")
    t.add_argument(
        "--resume", metavar="RUN", help="continue an interrupted run exactly where it stopped (with --epochs: train on)"
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run on its test set and write eval.json")
    add_run_arguments(e)
    e.add_argument("--iw-samples", type=int, help="K of the IWAE log-likelihood bound (default 1000)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.set_defaults(func=cmd_eval)

    pd = sub.add_parser("predict", help="sequence models: jumpy prediction error by horizon, rollout strip and GIF")
    add_run_arguments(pd)
    pd.add_argument("--baseline", action="append", default=[], metavar="RUN", help="another tdvae run to compare")
    pd.add_argument("--horizon", type=int, help="predict 1..H frames ahead (default the model's max_jump)")
    pd.add_argument("--context", type=int, help="observed frames (default: the sequence length minus the horizon)")
    pd.add_argument("--samples", type=int, default=16, help="imagined futures per sequence (default 16)")
    pd.add_argument("--split", default="test", choices=["train", "val", "test"])
    pd.set_defaults(func=cmd_predict)

    pr = sub.add_parser("probe", help="linear probe: logistic regression on a run's codes, raw pixels beside it")
    add_run_arguments(pr)
    pr.add_argument("--max-train", type=int, help="fit on a random subset of this many training examples")
    pr.add_argument("--C", type=float, help="inverse L2 strength (default: the best of 0.001..1 on the val split)")
    pr.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations at most (default 1000)")
    pr.add_argument("--no-baseline", action="store_true", help="skip the probe on raw pixels")
    pr.set_defaults(func=cmd_probe)

    g = sub.add_parser("grad-variance", help="per-parameter gradient variance: reparameterization vs score function")
    g.add_argument("run")
    g.add_argument("--repeats", type=int, default=100, help="gradient draws per estimator (default 100)")
    g.add_argument("--batch-size", type=int, default=100, help="test points in the fixed batch (default 100)")
    g.add_argument("--mc-samples", type=int, default=2, help="L draws per point; >= 2 adds the baseline column")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_grad_variance)

    dm = sub.add_parser("disentanglement", help="BetaVAE, FactorVAE, MIG, DCI, SAP scores, merged into eval.json")
    add_run_arguments(dm)
    dm.add_argument("--seed", type=int, default=0, help="seed of the metrics' sampling (default 0)")
    dm.add_argument("--metrics", action="append", default=[], help="betavae,factorvae,mig,dci,sap (default all)")
    dm.add_argument("--factors", action="append", default=[], help="factor names, comma-separated (default all)")
    dm.add_argument("--quick", action="store_true", help="about a tenth of the samples: a fast, rougher estimate")
    dm.set_defaults(func=cmd_disentanglement)

    tv = sub.add_parser("traverse", help="VAEs: latent traversals (PNG, GIF), KL per unit over training")
    tv.add_argument("run")
    tv.add_argument("--index", type=int, default=0, help="the test image to traverse around (default 0)")
    tv.add_argument("--out", help="folder for the figures (default RUN/figures)")
    tv.add_argument("--data-dir", help="where the run's data set lives now, if it moved")
    tv.set_defaults(func=cmd_traverse)

    la = sub.add_parser("latents", help="latent figures: 2-D manifold, codes by label, interpolations")
    la.add_argument("run")
    la.add_argument("--out", help="folder for the PNGs (default RUN/figures)")
    la.add_argument("--data-dir", help="where the run's data set lives now, if it moved")
    la.set_defaults(func=cmd_latents)

    s = sub.add_parser("sample", help="draw images from a generative model's prior")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG path (default RUN/figures/samples.png)")
    s.set_defaults(func=cmd_sample)

    tp = sub.add_parser("train-prior", help="VQ models: fit a gated PixelCNN prior over the frozen run's codes")
    add_run_arguments(tp)
    tp.add_argument("--epochs", type=int, help="default 10")
    tp.add_argument("--batch-size", type=int, help="default 64")
    tp.add_argument("--lr", type=float, help="default 1e-3")
    tp.add_argument("--seed", type=int, help="default 0")
    tp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="prior channels, layers, kernel")
    tp.set_defaults(func=cmd_train_prior)

    sub.add_parser("models", help="list the models").set_defaults(func=lambda a: _listing("models", MODELS))
    sub.add_parser("datasets", help="list the data sets").set_defaults(func=lambda a: _listing("data sets", DATASETS))
    sub.add_parser("presets", help="list the shipped presets").set_defaults(
        func=lambda a: _listing("presets", presets().values())
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
