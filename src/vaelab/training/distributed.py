"""Data-parallel training's processes: joining a launcher's process group (torchrun, SLURM's srun, any launcher that
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), or spawning N local processes for ``--devices N``;
collectives that carry Python objects (the checkpoint from rank 0, every rank's RNG state to rank 0).

Every rank draws its own noise: rank 0 keeps the run's seeded stream (a one-process run is unchanged) and rank r > 0
is reseeded with ``rank_seed(seed, r)``, so the reparameterization and binarization noise of a DDP run is independent
across ranks, as it is across the examples of one process with N times the batch.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from vaelab.core.errors import VaelabError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: SLURM's names for the first three (srun sets them; MASTER_ADDR and MASTER_PORT come from the job script)
SLURM_VARS = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}
SLURM_HINT = (
    " (under srun, export them in the job script: MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | "
    "head -n 1) and MASTER_PORT=29500, say)"
)
RANK_SEED_STRIDE = 1_000_003  # a prime: rank r's stream starts from seed + r * stride


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launcher's process group."""

    rank: int
    world: int
    local_rank: int
    master_addr: str
    master_port: int


def launched(environ: dict[str, str] | None = None) -> Launch | None:
    """The launcher's environment, or None when no launcher started this process; one clear line when it is
    incomplete or inconsistent."""
    env = dict(os.environ if environ is None else environ)
    tasks = env.get("SLURM_NTASKS", "1")
    srun_step = "SLURM_STEP_ID" in env and not (tasks.isdigit() and int(tasks) == 1)  # srun with several tasks
    if "RANK" not in env and "SLURM_PROCID" in env and (srun_step or "MASTER_ADDR" in env):  # srun, no torchrun
        env.update({ours: env[theirs] for ours, theirs in SLURM_VARS.items() if theirs in env})
    present = [v for v in LAUNCH_VARS if v in env]
    if not present:
        return None
    missing = [v for v in LAUNCH_VARS if v not in env]
    if missing:
        raise VaelabError(
            f"the launcher's environment is incomplete: {', '.join(present)} set but {', '.join(missing)} missing; "
            f"a launcher such as torchrun sets all of {', '.join(LAUNCH_VARS)}"
            + (SLURM_HINT if "SLURM_STEP_ID" in env else "")
        )
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        port = int(env["MASTER_PORT"])
    except ValueError:
        values = ", ".join(f"{v}={env[v]!r}" for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"))
        raise VaelabError(
            f"the launcher's RANK, WORLD_SIZE, LOCAL_RANK and MASTER_PORT must be integers: {values}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0 or not 0 < port < 65536:
        raise VaelabError(
            f"the launcher's environment is inconsistent: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}, "
            f"MASTER_PORT={port} (need 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0, a port in 1..65535)"
        )
    return Launch(rank, world, local, env["MASTER_ADDR"], port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(code: int) -> NoReturn:
    """Leave a process that joined a process group with ``code``, once its output is flushed, without the
    interpreter's teardown: on CPU, gloo's worker threads free a finished collective's tensors a moment after it
    completes, and when that lands during teardown the thread cannot take the GIL and the process aborts (SIGABRT,
    "terminate called without an active exception"; pytorch/pytorch#179291). ``destroy_process_group`` does not
    join those threads."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    os._exit(code)


def rank_seed(seed: int, rank: int) -> int:
    return (seed + rank * RANK_SEED_STRIDE) % (2**63)


def init_group(device_type: str, rank: int, world: int, addr: str, port: int) -> None:
    """Join the process group: NCCL on GPUs, gloo on CPU (env:// rendezvous, as torchrun expects)."""
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port))
    backend = "nccl" if device_type == "cuda" else "gloo"
    global _joined
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    _joined = True


_joined = False  # set once this process joins a group (see end_process)


def joined_group() -> bool:
    """Whether this process joined a process group: it should then leave through ``end_process``."""
    return _joined


def broadcast_object(obj: Any, rank: int) -> Any:
    """Rank 0's ``obj`` on every rank (pickled through the process group; tensors travel as CPU tensors)."""
    holder = [obj if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def rng_state(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
