"""Your own table: ``--data FILE.csv`` of numeric columns (tabular data), modelled with a Gaussian likelihood.

The first row is the header when any of its cells is not a number. Every column is standardized with the mean and
standard deviation of the training rows (the test rows, carved by the run's seed, are left out); both are stored in
the run's config.json (``data.shift``, ``data.scale``, ``data.columns``) so that ``vaelab sample`` writes samples in
the table's own units and evaluation can report them. A column that is not numeric is refused by name.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab.core.errors import VaelabError
from vaelab.data.base import DATASETS, ImageArrays
from vaelab.data.sources.registry import PATH_SOURCES, PathSource, check_fingerprint, fingerprint

NAME = "table"
TEST_STREAM = 1


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_table(path: Path) -> tuple[list[str], np.ndarray]:
    """The column names and the (rows, columns) float64 values of a CSV file."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VaelabError(f"{path}: cannot read it as a CSV file ({e})") from None
    if not rows:
        raise VaelabError(f"{path} is empty; a table needs rows of numeric columns")
    head = rows[0]
    has_header = any(_number(c) is None for c in head)
    names = (
        [c.strip() or f"column {i + 1}" for i, c in enumerate(head)]
        if has_header
        else [f"column {i + 1}" for i in range(len(head))]
    )
    body = rows[1:] if has_header else rows
    if len(body) < 2:
        raise VaelabError(f"{path} has {len(body)} data row(s); a table needs at least two (train and test)")
    values = np.empty((len(body), len(names)))
    for r, row in enumerate(body):
        if len(row) != len(names):
            raise VaelabError(
                f"{path}, row {r + 1 + has_header}: {len(row)} cells, but the table has {len(names)} columns"
            )
        for c, cell in enumerate(row):
            v = _number(cell)
            if v is None:
                raise VaelabError(
                    f"{path}: column {names[c]!r} is not numeric (row {r + 1 + has_header}: {cell.strip()!r}); "
                    "drop it or encode it as numbers"
                )
            values[r, c] = v
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise VaelabError(
            f"{path}: column {names[c]!r} holds NaN or infinite values (row {r + 1 + has_header}); fill or drop them"
        )
    return names, values


def _split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng((seed, TEST_STREAM)).permutation(n)
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (a constant column gets 1, so it standardizes to 0)."""
    mean, std = values.mean(0), values.std(0)
    return mean, np.where(std > 0, std, 1.0)


def describe(path: Path, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """The data section of a run on a CSV table, with the training rows' column statistics."""
    names, values = read_table(path)
    train, _ = _split(len(values), seed, float(options.get("test_fraction", 0.1)))
    mean, std = statistics(values[train])
    return {
        "name": NAME,
        "path": str(path),
        "fingerprint": fingerprint([path], path.parent),
        "shift": tuple(float(v) for v in mean),
        "scale": tuple(float(v) for v in std),
        "columns": tuple(names),
    }


def restore(x: Tensor, shift: tuple[float, ...], scale: tuple[float, ...]) -> Tensor:
    """Standardized rows back in the table's units."""
    return x * torch.tensor(scale, dtype=x.dtype, device=x.device) + torch.tensor(shift, dtype=x.dtype, device=x.device)


def log_scale(scale: tuple[float, ...]) -> float:
    """log |det| of the standardization's Jacobian, sum_j log scale_j: the nats a density in standardized units
    gains per row in the table's units (log p(x) = log p(z) - sum_j log scale_j)."""
    return float(sum(math.log(s) for s in scale))


def write_samples(config: Any, samples: Tensor, out: Path) -> Path:
    """Samples of a table run as a CSV in the table's units (its own column names); returns the file written."""
    out = out.with_suffix(".csv")
    values = restore(samples.reshape(len(samples), -1).detach().cpu().double(), config.shift, config.scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(config.columns)
        w.writerows([[f"{v:.6g}" for v in row] for row in values.tolist()])
    tmp.replace(out)
    return out


def in_table_units(config: Any, result: dict[str, Any]) -> dict[str, float]:
    """A run's bounds in the table's own units: log p(x) = log p(z) - sum_j log scale_j per row."""
    c = log_scale(config.scale)
    out = {f"{k}_table_units": result[k] - c for k in ("elbo", "iwae") if k in result}
    if "nll" in result:
        out["nll_table_units"] = result["nll"] + c
    return out


@DATASETS.register(
    NAME,
    "your own table: --data FILE.csv of numeric columns, standardized, Gaussian likelihood",
    kind="vectors",
    likelihood="gaussian",
    takes_path=True,
    takes_seed=True,
    takes_stats=True,
    write_samples=write_samples,
    in_data_units=in_table_units,
)
def load_table(
    data_dir: Path | None,
    path: Path | None = None,
    fingerprint: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
    shift: tuple[float, ...] = (),
    scale: tuple[float, ...] = (),
    columns: tuple[str, ...] = (),
) -> ImageArrays:
    """The table's rows, standardized with the stored statistics (else those of its training rows)."""
    if path is None:
        raise VaelabError(f"{NAME} needs its file: --data FILE.csv")
    path = Path(path)
    check_fingerprint(path, fingerprint, lambda: _fingerprint(path))
    _, values = read_table(path)
    train, test = _split(len(values), seed, test_fraction)
    if shift:
        if len(shift) != values.shape[1]:
            raise VaelabError(f"{path} has {values.shape[1]} columns, but the run was made on {len(shift)}")
        mean, std = np.array(shift), np.array(scale)
    else:
        mean, std = statistics(values[train])
    z = ((values - mean) / std).astype(np.float32)
    return ImageArrays(z[train], z[test])


def _fingerprint(path: Path) -> str:
    return fingerprint([path], path.parent)


PATH_SOURCES.register("table", "CSV tables")(
    PathSource(lambda p: p.is_file() and p.suffix.lower() == ".csv", describe, "a .csv table of numeric columns")
)
