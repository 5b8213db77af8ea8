"""Where a sweep's runs execute. ``local``: N worker processes on this machine, each run in a fresh process with its
share of the CPU threads (or one GPU each, round robin over the visible ones). ``ray``: every run a Ray task asking
for the spec's CPUs and GPUs, on a local Ray instance or a cluster joined with ``ray.init(address=...)``.

An engine calls ``done(point, outcome)`` as each run ends; a run's failure is an outcome, never an exception, so the
others go on. A new engine is one ``ENGINES.register``.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vaelab.core.errors import VaelabError
from vaelab.core.registry import Registry
from vaelab.core.threads import resolve_threads
from vaelab.sweeps.point import run_point
from vaelab.sweeps.spec import Point, SweepSpec

RAY_CONNECT_TIMEOUT_S = 10.0  # an address that does not answer within this is refused
RAY_INSTALL = "pip install 'vaelab[ray]'"
Done = Callable[[Point, dict[str, Any]], None]


@dataclass(frozen=True)
class EngineOptions:
    """``workers``: runs at once (local; for a local Ray instance, its CPUs); ``address``: the Ray cluster to join
    (None: start a local instance; ``auto``: the one this machine belongs to)."""

    workers: int = 1
    address: str | None = None


Engine = Callable[[Sequence[Point], str, SweepSpec, EngineOptions, Done], None]
ENGINES: Registry[Engine] = Registry("sweep engine")


# -- local -------------------------------------------------------------------------------------------------------


def _worker(threads: int, gpu: int | None, out: str, tasks: Any, results: Any) -> None:
    """A local worker: runs points from ``tasks`` until the sentinel None or an interrupt (which ends the sweep)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM checkpoints the run as Ctrl-C does
    try:
        while (point := tasks.get()) is not None:
            results.put(("start", os.getpid(), point.name, None))
            outcome = run_point(point, out, threads, gpu)
            results.put(("done", os.getpid(), point.name, outcome))
            if outcome["status"] == "interrupted":
                return
    except KeyboardInterrupt:
        return


def slots(workers: int) -> list[tuple[int, int | None]]:
    """(CPU threads, GPU or None) of each local worker: the thread policy's CPUs (the cores this process may use, or
    ``OMP_NUM_THREADS``; ``vaelab.core.threads``) shared out, or one GPU each."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = resolve_threads(None, share=workers)
    return [(threads, i % gpus if gpus else None) for i in range(workers)]


@ENGINES.register("local", "N worker processes on this machine, each with its share of the CPU threads or a GPU")
def local_engine(points: Sequence[Point], out: str, spec: SweepSpec, options: EngineOptions, done: Done) -> None:
    """N long-lived workers (each imports torch once) take the points in order; a worker that dies fails its run
    alone and is replaced."""
    if not points:
        return
    ctx = mp.get_context("spawn")
    tasks, results = ctx.SimpleQueue(), ctx.SimpleQueue()
    by_name = {p.name: p for p in points}
    for p in points:
        tasks.put(p)
    workers = min(options.workers, len(points))
    for _ in range(workers):
        tasks.put(None)
    alive: dict[int, tuple[Any, tuple[int, int | None]]] = {}
    current: dict[int, str] = {}  # worker pid -> the point it runs
    reported: set[str] = set()

    def start(slot: tuple[int, int | None]) -> None:
        process = ctx.Process(target=_worker, args=(*slot, out, tasks, results), daemon=True)
        process.start()
        alive[process.pid] = (process, slot)

    def drain() -> None:
        while not results.empty():
            kind, pid, name, outcome = results.get()
            if kind == "start":
                current[pid] = name
            else:
                current.pop(pid, None)
                reported.add(name)
                done(by_name[name], outcome)

    for slot in slots(workers):
        start(slot)
    try:
        while alive:
            time.sleep(0.1)
            drain()
            for pid, (process, slot) in list(alive.items()):
                if process.is_alive():
                    continue
                process.join()
                drain()  # what it reported just before it exited
                del alive[pid]
                name = current.pop(pid, None)
                if name is not None:  # died in the middle of a run: that run failed, a new worker goes on
                    reported.add(name)
                    done(by_name[name], _lost(process.exitcode))
                    start(slot)
        drain()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached every worker too: each checkpoints its run and stops
        for process, _ in alive.values():
            process.join(timeout=60)
        drain()
        raise
    finally:
        for process, _ in alive.values():
            if process.is_alive():
                process.terminate()
    for name in by_name:
        if name not in reported:  # the workers stopped (an interrupt) before they took it
            done(by_name[name], {"status": "pending", "error": "not run: the sweep's workers stopped before it"})


def _lost(exitcode: int | None) -> dict[str, Any]:
    how = f"was killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exited {exitcode}"
    return {"status": "failed", "error": f"the worker process {how} before it reported"}


# -- ray ---------------------------------------------------------------------------------------------------------


def import_ray():
    """The ``ray`` module, or one line saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise VaelabError(f"the ray engine needs Ray, which is not installed: {RAY_INSTALL}") from None


def check_reachable(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse a cluster address (``HOST:PORT`` or ``ray://HOST:PORT``) that does not accept a connection in time."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise VaelabError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise VaelabError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({e.strerror or type(e).__name__}); "
            "start it with `ray start --head` or check the address"
        ) from None


@ENGINES.register("ray", "Ray tasks, each asking for the spec's cpus and gpus, locally or on a cluster", joins=True)
def ray_engine(points: Sequence[Point], out: str, spec: SweepSpec, options: EngineOptions, done: Done) -> None:
    if options.address not in (None, "auto"):
        check_reachable(options.address)
    ray = import_ray()
    try:
        if options.address is None:
            ray.init(num_cpus=max(options.workers, int(spec.cpus)), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    except Exception as e:  # Ray's own time-outs (it raises plain Exceptions too), a refused or foreign server
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray instance"
        raise VaelabError(f"cannot join {where}: {str(e).splitlines()[0]}") from None
    try:
        task = ray.remote(run_point).options(num_cpus=spec.cpus, num_gpus=spec.gpus, max_retries=0)
        threads = max(1, int(spec.cpus))
        pending = {task.remote(p, out, threads, None): p for p in points}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            point = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as e:  # the task's worker died: a failed run, the others go on
                outcome = {"status": "failed", "error": f"the Ray task failed: {str(e).splitlines()[0]}"}
            done(point, outcome)
    except KeyboardInterrupt:
        for ref, point in pending.items():
            ray.cancel(ref)
            done(point, {"status": "interrupted", "error": "interrupted (Ctrl-C)"})
        raise
    finally:
        ray.shutdown()
