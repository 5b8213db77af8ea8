"""A sweep spec: which model (or preset) on which data, the fixed options, the grid of values to cross, the seeds,
the reports to make of every run, and what each run asks of a worker.

    {"model": "vae", "data": "digits", "options": {"epochs": 1}, "grid": {"latent_dim": [2, 4]}, "seeds": [0, 1],
     "eval": ["eval"]}

``preset`` may stand in for ``model`` (its options come first; ``options`` and the grid override them) or be a key
of the grid (one preset per value). ``eval`` is a list of report kinds or a mapping of kind to its options, e.g.
``{"eval": {"iw_samples": 100}, "disentanglement": {"quick": true}}``. ``resources`` (``{"cpus": 1, "gpus": 0}``)
is what every run asks of a Ray cluster. Every point of the grid, once per seed, is a run folder with a deterministic
name: ``BASE-KEY=VALUE-...-seedS`` (BASE the preset or the model).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab.core.errors import VaelabError
from vaelab.models import MODELS
from vaelab.presets import get_preset
from vaelab.runs import RunConfig, make_run_config
from vaelab.sweeps.reports import REPORTS

KEYS = ("model", "preset", "data", "options", "grid", "seeds", "eval", "resources")
RESOURCES = ("cpus", "gpus")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its folder name, model, data, every option, the grid values that single it out, its seed
    and the reports to make of it."""

    name: str
    model: str
    data: str
    options: dict[str, Any]
    values: dict[str, Any]
    seed: int
    reports: dict[str, dict[str, Any]]

    def config(self) -> RunConfig:
        """The run config this point trains."""
        return make_run_config(self.model, self.data, {**self.options, "seed": self.seed})


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked sweep spec (see the module's docstring); ``source`` is the dict it was read from."""

    source: dict[str, Any]
    points: tuple[Point, ...]
    cpus: float = 1.0
    gpus: float = 0.0
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec from a JSON file (or YAML, with PyYAML installed) and check it (``parse_spec``)."""
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"sweep spec {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # optional: JSON needs nothing more
        except ImportError:
            raise VaelabError(
                f"{path} is YAML, and reading YAML needs PyYAML: pip install pyyaml (or write the spec as JSON)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise VaelabError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VaelabError(f"{path} is not valid JSON ({e}); a sweep spec is a JSON (or YAML) object") from None
    return parse_spec(data, str(path))


def parse_spec(data: Any, where: str = "the sweep spec") -> SweepSpec:
    """Check a spec's keys, model or preset, grid, seeds and reports, and build every point's run config once, so a
    bad option is refused before anything is trained."""
    if not isinstance(data, dict):
        raise VaelabError(f"{where} must be an object with the keys {', '.join(KEYS)}")
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise VaelabError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(KEYS)}")
    options = _mapping(data.get("options", {}), "options", where)
    grid = _mapping(data.get("grid", {}), "grid", where)
    if "grid" in data and not grid:
        raise VaelabError(f"the grid of {where} is empty; give each key a list of values, or leave the grid out")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise VaelabError(f"grid key {key!r} of {where} needs a non-empty list of values, got {values!r}")
    for key in (*options, *grid):
        if key.rpartition(".")[2] == "seed":
            raise VaelabError(f"{where} sets the seed in {key!r}; list the seeds under 'seeds' instead")
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise VaelabError(f"'seeds' of {where} must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise VaelabError(f"'seeds' of {where} lists a seed twice: {seeds}")
    reports = _reports(data.get("eval", []), where)
    cpus, gpus = _resources(data.get("resources", {}), where)
    if "model" in data and "preset" in data:
        raise VaelabError(f"{where} names both a model and a preset; give one (a preset names its model)")
    if "preset" in grid and ("model" in data or "preset" in data):
        raise VaelabError(f"{where} crosses presets in its grid; then give no top-level model or preset")
    if not {"model", "preset"} & (set(data) | set(grid)):
        raise VaelabError(f"{where} names no model (choose from: {', '.join(MODELS.names())}) and no preset")
    if "model" in grid:
        raise VaelabError(
            f"{where} crosses models in its grid; cross presets (grid key 'preset') or write one spec each"
        )
    points = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        for seed in seeds:
            points.append(_point(data, options, values, seed, reports, where))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise VaelabError(f"two points of {where} get the same folder name {twice!r}; make the grid's values distinct")
    return SweepSpec(data, tuple(points), cpus, gpus, reports)


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VaelabError(f"{key!r} of {where} must be an object of key: value, got {value!r}")
    return value


def _reports(value: Any, where: str) -> dict[str, dict[str, Any]]:
    reports = {name: {} for name in value} if isinstance(value, list) else value
    if not isinstance(reports, dict) or not all(isinstance(k, str) for k in reports):
        raise VaelabError(f"'eval' of {where} must list report kinds or map them to options, got {value!r}")
    for name, options in reports.items():
        if name not in REPORTS:
            raise VaelabError(f"unknown report kind {name!r} in {where}; choose from: {', '.join(REPORTS.names())}")
        REPORTS.get(name).check(options or {}, f"report {name!r} of {where}")
    return {name: dict(options or {}) for name, options in reports.items()}


def _resources(value: Any, where: str) -> tuple[float, float]:
    resources = _mapping(value, "resources", where)
    unknown = [k for k in resources if k not in RESOURCES]
    if unknown:
        raise VaelabError(f"unknown resource {unknown[0]!r} in {where}; choose from: {', '.join(RESOURCES)}")
    cpus, gpus = resources.get("cpus", 1), resources.get("gpus", 0)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in (cpus, gpus)) or cpus <= 0:
        raise VaelabError(f"resources of {where}: cpus must be > 0 and gpus >= 0, got cpus={cpus!r}, gpus={gpus!r}")
    return float(cpus), float(gpus)


def _point(data, options, values, seed, reports, where) -> Point:
    preset_name = values.get("preset", data.get("preset"))
    grid_options = {k: v for k, v in values.items() if k != "preset"}
    if preset_name is not None:
        preset = get_preset(preset_name)
        model, base_data, base, merged = preset.model, preset.data, preset_name, dict(preset.options)
    else:
        model, base_data, base, merged = data["model"], "digits", data["model"], {}
        MODELS.get(model)  # an unknown model: one line naming the registered ones
    merged.update(options)
    merged.update(grid_options)
    point = Point(
        name=point_name(base, grid_options, seed),
        model=model,
        data=data.get("data", base_data),
        options=merged,
        values=values,
        seed=seed,
        reports=reports,
    )
    try:
        point.config()
    except VaelabError as e:
        raise VaelabError(f"{where}, point {point.name}: {e}") from None
    return point


def point_name(base: str, values: dict[str, Any], seed: int) -> str:
    """``BASE-KEY=VALUE-...-seedS``: a folder name from the grid values (characters outside ``[A-Za-z0-9._,=+-]``
    become ``_``)."""
    parts = [base, *(f"{k}={value_text(v)}" for k, v in values.items()), f"seed{seed}"]
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", "-".join(parts))


def value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)
