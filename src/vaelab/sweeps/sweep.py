"""Running a sweep into a folder: every point an ordinary run folder SWEEP/NAME, the sweep's state in
SWEEP/sweep.json, its progress on the terminal and in SWEEP/sweep.log.

SWEEP/sweep.json   {"format": "vaelab-sweep", "spec": the spec, "engine", "runs": {NAME: {"values", "seed",
                   "status": pending | done | failed | interrupted, "action", "error", "seconds"}}}, written atomically
                   by the sweep's one coordinating process after every run
SWEEP/errors/      the traceback of each run that failed with an unexpected error (a bad option is one line in
                   sweep.json)
SWEEP/.lock        held (flock) by the process running the sweep: a second one on the same folder is refused

A rerun of the sweep skips the runs it finished, resumes interrupted ones from their checkpoints, makes the reports
that are missing and tries failed runs again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelab.core.errors import Interrupted, VaelabError
from vaelab.core.progress import Progress
from vaelab.runs import read_config, write_json
from vaelab.runs.folder import has_run
from vaelab.sweeps.engines import ENGINES, EngineOptions
from vaelab.sweeps.reports import REPORTS
from vaelab.sweeps.spec import Point, SweepSpec, read_spec

FORMAT = "vaelab-sweep"
STATUS = "sweep.json"
LOG = "sweep.log"


def read_status(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """SWEEP/sweep.json; a folder without one is refused in one line."""
    path = Path(sweep_dir) / STATUS
    if not path.is_file():
        raise VaelabError(
            f"{sweep_dir} holds no sweep (no {STATUS}); run one with: vaelab sweep SPEC --out {sweep_dir}"
        )
    try:
        status = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{path} is not valid JSON ({e}); it is damaged") from None
    if not isinstance(status, dict) or status.get("format") != FORMAT:
        raise VaelabError(f'{path} is not a vaelab sweep status (no "format": "{FORMAT}")')
    return status


@contextlib.contextmanager
def _hold(sweep_dir: Path) -> Iterator[None]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise VaelabError(f"another process is running a sweep in {sweep_dir}; wait for it to end") from None
            raise
        yield


def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    out: str | os.PathLike,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
) -> dict[str, Any]:
    """Run every point of ``spec`` (a ``SweepSpec`` or a spec file) into ``out`` with ``engine`` (``local`` with
    ``workers`` processes, or ``ray``, joining the cluster at ``address``: None starts a local instance); returns the
    sweep's status (as in SWEEP/sweep.json). Finished runs are skipped, interrupted ones resumed; a failed run is
    recorded and the others go on."""
    spec = spec if isinstance(spec, SweepSpec) else read_spec(spec)
    run_engine = ENGINES.get(engine)
    if workers < 1:
        raise VaelabError(f"--workers must be >= 1, got {workers}")
    if address is not None and not ENGINES.entry(engine).meta.get("joins"):
        raise VaelabError(f"a Ray address is for the ray engine; --engine {engine} runs on this machine")
    out = Path(out)
    with _hold(out):
        previous = read_status(out)["runs"] if (out / STATUS).is_file() else {}
        runs = {
            p.name: {"values": p.values, "seed": p.seed, **_kept(previous.get(p.name), out / p.name, p)}
            for p in spec.points
        }
        status = {"format": FORMAT, "spec": spec.source, "engine": engine, "runs": runs}
        write_json(out / STATUS, status)
        todo = [p for p in spec.points if runs[p.name]["status"] != "done"]
        finished = len(spec.points) - len(todo)
        what = f"sweep of {len(spec.points)} runs into {out} ({engine}"
        what += f", {workers} workers)" if engine == "local" else ")"
        with Progress(len(spec.points), what, unit="runs", done=finished, log=out / LOG) as progress:
            if finished:
                progress.print(f"{finished} of {len(spec.points)} runs finished before: skipped")
            counts = {"done": finished, "failed": 0, "interrupted": 0}

            def done(point: Point, outcome: dict[str, Any]) -> None:
                runs[point.name].update({"error": None, "action": None, **outcome})
                write_json(out / STATUS, status)
                counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
                progress.advance()
                progress.status(", ".join(f"{n} {k}" for k, n in counts.items() if n))
                if outcome["status"] != "done":
                    progress.print(f"{point.name}: {outcome['status']}: {outcome.get('error')}")

            try:
                run_engine(todo, str(out), spec, EngineOptions(workers, address), done)
            except KeyboardInterrupt:
                raise Interrupted(f"sweep interrupted (Ctrl-C); rerun the same command to go on: {out}") from None
            failed = [name for name, r in runs.items() if r["status"] == "failed"]
            if failed:
                progress.print(f"{len(failed)} of {len(runs)} runs failed (see {out / STATUS}): {', '.join(failed)}")
    return status


def _kept(before: dict[str, Any] | None, run_dir: Path, point: Point) -> dict[str, Any]:
    """A run's entry carried over from the last sweep: done stays done while its folder holds the run and every
    report the spec asks for."""
    if before and before.get("status") == "done" and has_run(run_dir) and _same(run_dir, point):
        return {k: before.get(k) for k in ("status", "action", "error", "seconds")}
    return {"status": "pending", "action": None, "error": None, "seconds": None}


def _same(run_dir: Path, point: Point) -> bool:
    """Whether the run folder holds this very point (its config, epochs included) with every report it asks for."""
    try:
        saved = {**read_config(run_dir).to_dict(), "data_spec": None}
    except VaelabError:
        return False
    return saved == point.config().to_dict() and all(
        REPORTS.get(kind).done(run_dir, options) for kind, options in point.reports.items()
    )
