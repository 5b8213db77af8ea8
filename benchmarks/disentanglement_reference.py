"""vaelab's disentanglement metrics against google-research/disentanglement_lib's own code, on the same inputs.

The reference is never a dependency of vaelab: this script reads its metric files from a local copy (a checkout or
the bare git directory that ``fetch`` leaves under /work/.mirror), with small stand-ins for ``gin`` (configurable
becomes a no-op; the study's gin settings are passed by hand: 20 histogram bins, prune threshold 0.05) and ``six``.

The representation: codes for every point of a factor grid, by default ``dsprites-small``'s 23,040 points, either
a hand-made code (factor values partly mixed, noise units, collapsed units) or a trained run's posterior means
(``--run RUN``). Two checks:

1. the same points: MIG, DCI and SAP on the codes and factors our sampler drew (``*_from_codes`` against the
   reference's ``_compute_mig``, ``_compute_dci``, ``_compute_sap``); the BetaVAE and FactorVAE scores end to end
   (the reference's ``compute_beta_vae_sklearn`` and ``compute_factor_vae``) fed one random stream shared with ours,
   so both draw the same factors, batches and points;
2. the spread: each full metric with ``--seeds`` sampling seeds, ours (distinct DCI/SAP points) and the reference's
   (``RandomState(seed)``), mean and standard deviation side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_reference.py                  # quick sizes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/disentanglement_reference.py --full --seeds 5  # the study's sizes
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from vaelab.data.dsprites import DSprites
from vaelab.data.factors import CachedGrid
from vaelab.eval import disentanglement as dis
from vaelab.runs import load

MIRROR = Path("/work/.mirror/google-research+disentanglement_lib/repo")
FILES = ("utils", "beta_vae", "factor_vae", "mig", "dci", "sap_score")
FULL = {
    "betavae": dict(batch_size=64, num_train=10_000, num_eval=5_000),
    "factorvae": dict(batch_size=64, num_train=10_000, num_eval=5_000, num_variance_estimate=10_000),
    "mig": dict(num_samples=10_000),
    "dci": dict(num_train=10_000, num_test=5_000),
    "sap": dict(num_train=10_000, num_test=5_000),
}
QUICK = {name: {**sizes, **dis.QUICK_SIZES[name]} for name, sizes in FULL.items()}


# -- the reference, read from a local copy --------------------------------------------------------------------------


def stand_ins() -> None:
    """Minimal ``gin`` (``configurable`` a no-op, ``REQUIRED``) and, when missing, ``six.moves.range``."""
    gin = types.ModuleType("gin")
    gin.REQUIRED = object()
    gin.configurable = lambda *args, **kwargs: lambda fn: fn
    gin.tf = gin
    sys.modules["gin"], sys.modules["gin.tf"] = gin, gin
    try:
        import six
    except ImportError:
        six = types.ModuleType("six")
        six.moves = types.ModuleType("six.moves")
        six.moves.range = range
        sys.modules["six"], sys.modules["six.moves"] = six, six.moves


def load_reference(path: Path) -> dict[str, types.ModuleType]:
    """The reference's metric modules from a checkout or a bare git directory, with the study's gin settings."""
    root = Path(tempfile.mkdtemp(prefix="dlib-"))
    package = root / "disentanglement_lib" / "evaluation" / "metrics"
    package.mkdir(parents=True)
    for folder in (root / "disentanglement_lib", root / "disentanglement_lib" / "evaluation", package):
        (folder / "__init__.py").write_text("")
    for name in FILES:
        relative = f"disentanglement_lib/evaluation/metrics/{name}.py"
        if (path / relative).is_file():
            text = (path / relative).read_text()
        else:
            text = subprocess.run(
                ["git", f"--git-dir={path}", "show", f"HEAD:{relative}"], check=True, capture_output=True, text=True
            ).stdout
        (package / f"{name}.py").write_text(text)
    stand_ins()
    sys.path.insert(0, str(root))
    mods = {name: importlib.import_module(f"disentanglement_lib.evaluation.metrics.{name}") for name in FILES}
    # the study's gin settings (config/unsupervised_study_v1/metric_configs/*.gin)
    utils = mods["utils"]
    utils.make_discretizer = lambda target: utils._histogram_discretize(target, num_bins=20)
    mods["factor_vae"]._prune_dims = functools.partial(mods["factor_vae"]._prune_dims, threshold=0.05)
    return mods


class SharedStream(np.random.RandomState):
    """A RandomState whose ``randint`` draws from a NumPy Generator: the reference then draws what vaelab draws."""

    def __init__(self, gen: np.random.Generator) -> None:
        super().__init__(0)
        self.gen = gen

    def randint(self, low, high=None, size=None, dtype=int):
        low, high = (0, low) if high is None else (low, high)
        return self.gen.integers(low, high, size)


class ReferenceData:
    """disentanglement_lib's GroundTruthData over a ``CodeGrid``: observations are the codes themselves."""

    def __init__(self, grid: dis.CodeGrid) -> None:
        self.grid = grid
        self.num_factors = grid.num_factors
        self.factors_num_values = list(grid.factor_sizes)

    def sample_factors(self, num, random_state):
        gen = random_state.gen if isinstance(random_state, SharedStream) else None
        if gen is not None:
            return self.grid.sample_factors(num, gen)
        return np.stack([random_state.randint(size, size=num) for size in self.grid.factor_sizes], axis=-1)

    def sample_observations_from_factors(self, factors, random_state):
        return self.grid.render(factors)

    def sample(self, num, random_state):
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num, random_state):
        return self.sample(num, random_state)[1]


# -- the representation ---------------------------------------------------------------------------------------------


def handmade_codes(factors: np.ndarray, sizes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """10 units: the 5 factor values in [0, 1], each mixed 40% with the next, plus noise 0.2; 3 noise units;
    2 collapsed units (std 0.01, pruned by the FactorVAE score)."""
    rng = np.random.default_rng(seed)
    values = factors / np.maximum(np.asarray(sizes) - 1, 1)
    mixed = 0.6 * values + 0.4 * np.roll(values, -1, axis=1) + 0.2 * rng.normal(size=values.shape)
    return np.c_[mixed, rng.normal(size=(len(factors), 3)), 0.01 * rng.normal(size=(len(factors), 2))]


def run_codes(run_dir: str, source) -> np.ndarray:
    """A trained run's posterior means of every grid point."""
    model = load(run_dir).model.eval()
    out = []
    with torch.no_grad():
        for images, _ in source.batches(1024):
            out.append(model.code(torch.from_numpy(images)).float().numpy())
    return np.concatenate(out).astype(np.float64)


# -- the checks -----------------------------------------------------------------------------------------------------


def same_points(ref: dict, grid: dis.CodeGrid, sizes: dict, seed: int) -> list[tuple[str, float, float]]:
    """(score, ours, reference) on the same codes and points."""
    rows = []
    rng = np.random.default_rng(seed)
    codes, factors = dis.sample_codes(grid, dis.identity, sizes["mig"]["num_samples"], rng)
    rows.append(
        ("mig", dis.mig_from_codes(codes, factors)["mig"], ref["mig"]._compute_mig(codes.T, factors.T)["discrete_mig"])
    )
    n, m = sizes["dci"]["num_train"], sizes["dci"]["num_test"]
    x, y, xt, yt = dis.sample_train_test(grid, dis.identity, n, m, rng, True, "dci")
    ours, theirs = dis.dci_from_codes(x, y, xt, yt), ref["dci"]._compute_dci(x.T, y.T, xt.T, yt.T)
    again = ref["dci"]._compute_dci(x.T, y.T, xt.T, yt.T)  # its trees are unseeded: its own run-to-run spread
    for k in ("disentanglement", "completeness", "informativeness_test"):
        rows += [(f"dci/{k}", ours[k], theirs[k]), (f"dci/{k} (reference run again)", again[k], theirs[k])]
    n, m = sizes["sap"]["num_train"], sizes["sap"]["num_test"]
    x, y, xt, yt = dis.sample_train_test(grid, dis.identity, n, m, rng, True, "sap")
    for continuous in (False, True):
        ours = dis.sap_from_codes(x, y, xt, yt, continuous_factors=continuous)["sap"]
        theirs = ref["sap_score"]._compute_sap(x.T, y.T, xt.T, yt.T, continuous)["SAP_score"]
        rows.append(("sap" + ("/continuous" if continuous else ""), ours, theirs))
    data = ReferenceData(grid)
    ours = dis.betavae_score(grid, dis.identity, seed=np.random.default_rng(seed), **sizes["betavae"])
    theirs = ref["beta_vae"].compute_beta_vae_sklearn(
        data, lambda z: z, SharedStream(np.random.default_rng(seed)), **sizes["betavae"]
    )
    rows += [(f"betavae/{k}", ours[k], theirs[k]) for k in ("train_accuracy", "eval_accuracy")]
    ours = dis.factorvae_score(grid, dis.identity, seed=np.random.default_rng(seed), **sizes["factorvae"])
    theirs = ref["factor_vae"].compute_factor_vae(
        data, lambda z: z, SharedStream(np.random.default_rng(seed)), **sizes["factorvae"]
    )
    rows += [(f"factorvae/{k}", ours[k], theirs[k]) for k in ("train_accuracy", "eval_accuracy")]
    return rows


def reference_scores(ref: dict, data: ReferenceData, sizes: dict, seed: int) -> dict[str, float]:
    """Every metric by the reference end to end, with RandomState(seed) as its random_state."""
    rs = np.random.RandomState
    identity = lambda z: z  # noqa: E731
    s = sizes
    beta = ref["beta_vae"].compute_beta_vae_sklearn(data, identity, rs(seed), **s["betavae"])
    factor = ref["factor_vae"].compute_factor_vae(data, identity, rs(seed), **s["factorvae"])
    mig = ref["mig"].compute_mig(data, identity, rs(seed), num_train=s["mig"]["num_samples"])
    dci = ref["dci"].compute_dci(data, identity, rs(seed), **s["dci"])
    sap = ref["sap_score"].compute_sap(data, identity, rs(seed), continuous_factors=False, **s["sap"])
    return {
        "betavae/eval_accuracy": beta["eval_accuracy"],
        "factorvae/eval_accuracy": factor["eval_accuracy"],
        "mig": mig["discrete_mig"],
        "dci/disentanglement": dci["disentanglement"],
        "dci/completeness": dci["completeness"],
        "dci/informativeness_test": dci["informativeness_test"],
        "sap": sap["SAP_score"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", type=Path, default=MIRROR, help="disentanglement_lib: a checkout or a git dir")
    p.add_argument("--run", help="a trained run on dsprites-small: its posterior means are the codes")
    p.add_argument("--full", action="store_true", help="the study's sample sizes (default: vaelab's quick sizes)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds for the spread (0: skip it)")
    p.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = p.parse_args()
    if not args.reference.exists():
        raise SystemExit(f"no copy of disentanglement_lib at {args.reference}; pass --reference PATH")
    torch.set_num_threads(1)
    ref = load_reference(args.reference)
    sizes = FULL if args.full else QUICK
    source = DSprites.small()
    factors = source.index_to_factors(np.arange(len(source)))
    codes = run_codes(args.run, CachedGrid(source)) if args.run else handmade_codes(factors, source.factor_sizes)
    grid = dis.CodeGrid(codes, factors, names=source.factor_names)
    what = f"run {args.run}" if args.run else "hand-made codes"
    label = "full" if args.full else "quick"
    print(f"{what} on dsprites-small ({len(grid)} grid points, {codes.shape[1]} units), {label} sizes")

    start = time.perf_counter()
    rows = same_points(ref, grid, sizes, seed=0)
    print(
        "\n1. the same points (seed 0)\n\n| score | vaelab | disentanglement_lib | difference |\n|---|---:|---:|---:|"
    )
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.6f} | {theirs:.6f} | {ours - theirs:+.2e} |")
    print(f"({time.perf_counter() - start:.0f} s)")
    result = {"codes": what, "sizes": sizes, "same_points": [dict(score=n, vaelab=a, reference=b) for n, a, b in rows]}

    if args.seeds:
        start = time.perf_counter()
        data = ReferenceData(grid)
        ours = [
            dis.all_metrics(grid, dis.identity, seed=s, **{k: v for k, v in sizes.items()}) for s in range(args.seeds)
        ]
        theirs = [reference_scores(ref, data, sizes, s) for s in range(args.seeds)]
        print(f"\n2. the spread over sampling seeds 0..{args.seeds - 1}: mean ± sd\n")
        print("| score | vaelab | disentanglement_lib | difference of means / pooled sd |\n|---|---:|---:|---:|")
        spread = []
        for key in theirs[0]:
            a, b = np.array([o[key] for o in ours]), np.array([t[key] for t in theirs])
            sd = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if args.seeds > 1 else 0.0
            ratio = (a.mean() - b.mean()) / sd if sd > 0 else 0.0
            print(
                f"| {key} | {a.mean():.4f} ± {a.std(ddof=1) if args.seeds > 1 else 0:.4f} | "
                f"{b.mean():.4f} ± {b.std(ddof=1) if args.seeds > 1 else 0:.4f} | {ratio:+.2f} |"
            )
            spread.append(dict(score=key, vaelab=a.tolist(), reference=b.tolist()))
        print(f"({time.perf_counter() - start:.0f} s)")
        result["spread"] = spread
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
