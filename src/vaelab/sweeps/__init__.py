"""Sweeps: a spec of model, data, options, a grid of values and seeds becomes one ordinary run folder per point,
trained by a local pool of workers or on Ray, each with its reports; ``aggregate`` gathers them into one table."""

from vaelab.sweeps.engines import ENGINES
from vaelab.sweeps.reports import REPORTS
from vaelab.sweeps.spec import Point, SweepSpec, parse_spec, read_spec
from vaelab.sweeps.sweep import read_status, run_sweep

__all__ = ["ENGINES", "REPORTS", "Point", "SweepSpec", "parse_spec", "read_spec", "read_status", "run_sweep"]
