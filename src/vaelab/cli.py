"""The ``vaelab`` command: train, eval, sample, models, datasets.

Every bad input surfaces as a VaelabError, printed as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vaelab.config import parse_assignments
from vaelab.data import DATASETS
from vaelab.errors import VaelabError
from vaelab.models import MODELS
from vaelab.presets import get_preset, presets

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
    from vaelab.api import default_run_dir, make_run_config
    from vaelab.training.trainer import train

    given = {key: getattr(args, key) for key in SHORTHANDS if getattr(args, key) is not None}
    if args.resume:
        if args.model or given or args.set or args.data or args.out or args.preset:
            raise VaelabError("--resume continues a run with its own config.json; give no model or options with it")
        console.print(f"resuming {args.resume}")
        run_dir = train(None, args.resume, resume=True)
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
        run_dir = Path(args.out) if args.out else default_run_dir(model, config.data.name)
        console.print(f"training {model} on {config.data.name} into {run_dir}")
        train(config, run_dir)
    console.print(f"done: {run_dir}   next: vaelab eval {run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from vaelab.evaluate import evaluate
    from vaelab.run import load
    from vaelab.training.trainer import resolve_device

    device = resolve_device(args.device)
    run = load(args.run, device)
    result = evaluate(run, args.split, args.iw_samples, device, args.data_dir)
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
        if result["active_units"] < 0.5 * result["latent_dim"]:
            console.print(
                f"[yellow]warning: only {result['active_units']} of {result['latent_dim']} latent units are "
                "active; the posterior has mostly collapsed to the prior[/]"
            )
    console.print(f"written: {run.path / 'eval.json'}")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from vaelab.figures import save_images
    from vaelab.run import load

    if args.n < 1:
        raise VaelabError(f"-n must be >= 1, got {args.n}")
    run = load(args.run)
    torch.manual_seed(args.seed)
    images = run.model.sample(args.n)
    out = Path(args.out) if args.out else run.path / "figures" / "samples.png"
    save_images(out, images.reshape(args.n, *run.config.data_shape), f"{args.n} samples from the prior")
    console.print(f"written: {out}")


def _listing(title: str, entries) -> None:
    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("description")
    for e in entries:
        table.add_row(e.name, e.description)
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaelab", description="Autoencoders and VAEs: train, evaluate, look.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model into a run folder")
    t.add_argument("model", nargs="?", help=f"one of: {', '.join(MODELS.names())}")
    t.add_argument("--data", help=f"one of: {', '.join(DATASETS.names())} (default digits)")
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
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly where it stopped")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run on its test set and write eval.json")
    e.add_argument("run")
    e.add_argument("--iw-samples", type=int, help="K of the IWAE log-likelihood bound (default 1000)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--data-dir", help="where the run's data set lives now, if it moved")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="draw images from a generative model's prior")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG path (default RUN/figures/samples.png)")
    s.set_defaults(func=cmd_sample)

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
    except VaelabError as e:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]vaelab: error:[/] {escape(str(e))}", highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("vaelab: interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
