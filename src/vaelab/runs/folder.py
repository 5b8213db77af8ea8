"""A run folder: everything needed to rebuild, resume, evaluate and look at one training run.

RUN/config.json          the run config: model, data and training options, and the data spec the model was built for
RUN/model/               the kept weights as a saved module (config.json + model.safetensors, ``save_pretrained``):
                         the best validation epoch when there is a validation split; ``vaelab.from_pretrained`` reads it
RUN/checkpoint.pt        training state for --resume (weights, optimizer, schedule, step, every RNG), atomic
RUN/metrics.jsonl        one JSON object per logged training interval, per validation and per epoch (split "epoch")
RUN/tb/                  TensorBoard events
RUN/figures/*.png        reconstructions, samples, learning curve, and each model's own figures
RUN/eval.json            written by `vaelab eval`; every report is keyed by its settings (eval-val-k1000.json,
                         disentanglement-quick-seed0.json, ...) and stamped with its weights (``runs.reports``)
RUN/prediction.json      written by `vaelab predict` (sequence models); RUN/probe.json by `vaelab probe`
RUN/prior/               a VQ run's code prior: itself a run folder, written by `vaelab train-prior`
RUN/train.log            the training's progress lines and messages, as printed
RUN/.lock                held (flock) by the process training in the folder; the lock dies with its process

A run folder is always in one of two states: resumable (a checkpoint) or finished (a checkpoint marked finished);
a folder without a checkpoint holds no run and may be trained into. The checkpoint is the truth: it carries the run
config, and config.json is rewritten from it when they differ (a kill between the two writes). Every file is written
through a temporary file and a rename, so a reader never sees half of one; the temporary files of killed writes are
removed by the next process that claims the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import atomic_write, remove_temp_files, write_failure, write_text
from vaelab.models import Model
from vaelab.runs.config import RunConfig

CHECKPOINT_FORMAT = "vaelab-checkpoint"
CONFIG = "config.json"
MODEL_DIR = "model"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
LOCK = ".lock"
LOG = "train.log"


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    return write_text(path, json.dumps(obj, indent=2))


def save_config(run_dir: Path, config: RunConfig) -> None:
    """Write RUN/config.json."""
    write_json(Path(run_dir) / CONFIG, config.to_dict())


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """RUN/config.json as a ``RunConfig``; a missing folder or config, or a corrupt file, is one clear error."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise VaelabError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise VaelabError(f"{run_dir} is not a vaelab run: it has no {CONFIG}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{path} is not valid JSON ({e}); it is corrupt or not a vaelab run") from None
    return RunConfig.from_dict(d, str(path))


def save_weights(run_dir: Path, model: Model) -> None:
    """The kept weights, as a saved module in RUN/model/."""
    model.save_pretrained(Path(run_dir) / MODEL_DIR)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write RUN/checkpoint.pt atomically: the training state, marked with the checkpoint format."""
    atomic_write(Path(run_dir) / CHECKPOINT, lambda p: torch.save({"format": CHECKPOINT_FORMAT, **state}, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint's state (loaded weights-only); a missing, truncated or foreign file is refused."""
    if not path.is_file():
        raise VaelabError(f"{path.parent} has no training checkpoint ({path.name}); it cannot be resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise VaelabError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); cannot resume from it"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise VaelabError(f"{path} is not a vaelab training checkpoint")
    return state


def load_model_state(model: Model, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights into ``model``; weights that do not fit its config are refused, naming ``path`` and the mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = " ".join(line.strip() for line in str(e).splitlines()[1:2]) or str(e).splitlines()[0]
        raise VaelabError(f"the weights in {path} do not fit the model described in config.json ({first})") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl as a list of rows ([] before the first); needs no weights, so it reads interrupted runs.

    A line cut short by a kill mid-write is dropped, with a warning."""
    return metrics_rows(Path(run_dir) / METRICS)


def metrics_rows(path: Path, warn: bool = True) -> list[dict[str, Any]]:
    """The whole rows of a metrics.jsonl file; lines cut short are skipped (with a warning when ``warn``)."""
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad and warn:
        warnings.warn(f"{path}: {bad} incomplete line(s) (a write cut short) were skipped", stacklevel=2)
    return rows


def truncate_metrics(run_dir: Path, rows: int) -> None:
    """Keep the first ``rows`` whole rows of RUN/metrics.jsonl (those a checkpoint vouches for): a resume then
    writes every step once, and a partial line left by a kill goes."""
    path = Path(run_dir) / METRICS
    kept = metrics_rows(path, warn=False)[:rows]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def has_run(run_dir: Path) -> bool:
    """Whether the folder holds a run: a checkpoint (the one file that makes a folder resumable)."""
    return (Path(run_dir) / CHECKPOINT).exists()


class Claim:
    """The exclusive right to train in a run folder, held through an flock on RUN/.lock (released when the process
    ends, however it ends). ``created`` lists what this claim made, so a run that dies before its first checkpoint
    can take it away again and leave the folder as it found it."""

    def __init__(self, run_dir: Path, fd: int, created_folder: bool, before: set[str]) -> None:
        self.run_dir, self.fd, self.created_folder, self.before = run_dir, fd, created_folder, before

    def undo(self) -> None:
        """Remove everything this claim's run created (the run never reached its first checkpoint)."""
        if has_run(self.run_dir):
            return
        for entry in self.run_dir.iterdir():
            if entry.name not in self.before and entry.name != LOCK:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        if self.created_folder:
            with contextlib.suppress(OSError):
                (self.run_dir / LOCK).unlink()
                self.run_dir.rmdir()


def _lock(run_dir: Path) -> int:
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_failure(run_dir / LOCK, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise write_failure(run_dir / LOCK, e) from None
        holder = (run_dir / LOCK).read_text().strip() or "?"
        raise VaelabError(
            f"another vaelab process (pid {holder}) is training in {run_dir}; wait for it to finish, or train "
            "into another folder (--out)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


@contextlib.contextmanager
def claim(run_dir: str | os.PathLike, resume: bool, unique: bool = False) -> Iterator[Claim]:
    """Hold RUN for one training process: a new run gets a folder holding no run, a resume gets its own run; a
    second process on the same folder is refused at once. Orphaned temporary files are removed.

    ``unique``: RUN is a default name; a fresh folder is made beside it if it is taken (``RUN-2``, ``RUN-3``, ...),
    atomically, so two runs started in the same second get different folders."""
    run_dir = Path(run_dir)
    created = False
    if resume:
        if not run_dir.is_dir():
            raise VaelabError(f"run folder {run_dir} does not exist")
    elif unique:
        run_dir, created = new_run_dir(run_dir), True
    else:
        try:
            run_dir.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not run_dir.is_dir():
                raise VaelabError(f"{run_dir} exists and is not a folder; choose another --out") from None
        except OSError as e:
            raise write_failure(run_dir, e) from None
    before = {p.name for p in run_dir.iterdir()}
    fd = _lock(run_dir)
    try:
        if not resume and has_run(run_dir):
            raise VaelabError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --out")
        remove_temp_files(run_dir)
        yield Claim(run_dir, fd, created, before)
    finally:
        os.close(fd)  # releases the lock


def new_run_dir(base: Path) -> Path:
    """A folder that did not exist, created now: ``base``, else ``base-2``, ``base-3``, ... (mkdir is atomic)."""
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as e:
        raise write_failure(base.parent, e) from None
    raise VaelabError(f"no free run folder name beside {base}; pass --out")


def default_run_name(model: str, data: str) -> Path:
    """runs/MODEL-DATA-YYYYmmdd-HHMMSS, the base of a run folder's name when none is given."""
    return Path("runs") / f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"
