"""How many CPU threads torch computes with: the thread policy of every command and of the trainer.

The default is the CPUs this process may run on (its affinity mask, ``os.sched_getaffinity``; a container's or
``taskset``'s limit, not the machine's core count), or ``OMP_NUM_THREADS`` when it is set. An explicit count
(``--threads N``, ``train.threads``) wins over both. Under ``--devices N`` on one machine the count is shared: each
of the N processes gets ``threads // N`` (at least 1), except ``OMP_NUM_THREADS``, which is per process already (the
convention torchrun follows).

On a machine shared with other jobs, fewer threads are faster: an OpenMP thread that loses its core stalls the
others at every parallel region, and a step of a small model can then take many times longer than on one thread.
"""

from __future__ import annotations

import os
import warnings

import torch

from vaelab.core.errors import VaelabError

OMP_VARIABLE = "OMP_NUM_THREADS"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive count, or None when it is unset or not a positive integer."""
    value = os.environ.get(OMP_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def check_threads(threads: int, flag: str = "--threads") -> str | None:
    """Refuse a count below 1 (one line); return a warning when it exceeds the CPUs this process may use."""
    if threads < 1:
        raise VaelabError(
            f"{flag} must be >= 1 (the torch threads of this process), got {threads}; leave it out for the "
            f"default, the {available_cpus()} CPU(s) this process may use"
        )
    cpus = available_cpus()
    if threads > cpus:
        return (
            f"{flag} {threads} is more than the {cpus} CPU(s) this process may use; the threads will share cores "
            "and wait on each other (slower, not faster)"
        )
    return None


def resolve_threads(threads: int | None = None, share: int = 1) -> int:
    """The thread count of one of ``share`` processes on this machine: ``threads`` (a total, split ``share`` ways)
    if given (None or 0: not given), else ``OMP_NUM_THREADS`` (per process), else the available CPUs split."""
    if threads:
        return max(1, threads // max(1, share))
    omp = omp_threads()
    if omp is not None:
        return omp
    return max(1, available_cpus() // max(1, share))


def set_threads(threads: int | None = None, share: int = 1) -> int:
    """Set torch's intra-op thread count by the policy above and return it; a count over the CPUs warns."""
    if threads:
        message = check_threads(threads)
        if message is not None:
            warnings.warn(message, ThreadsWarning, stacklevel=2)
    n = resolve_threads(threads, share)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class ThreadsWarning(UserWarning):
    """More threads were asked for than the CPUs this process may use."""
