"""One training loop for every model: Adam over the model's parameter groups, LR schedule, clipping, early stopping,
checkpoints, DDP (spawned locally or joined from a launcher such as torchrun), and a run folder that survives any
kill.

The step does no host-device synchronization: loss terms are summed on the device and read (and checked for
NaN/inf) only every ``log_every`` steps. Under ``devices > 1`` each process runs this loop on its slice of every
global batch, and DistributedDataParallel averages the gradients; every rank draws its own noise.

The run folder is always resumable or finished (``vaelab.runs.folder``): the folder is claimed with a lock that dies
with its process; the first checkpoint is written before anything else; config.json changes only together with the
checkpoint that makes it true (the checkpoint carries the run config); Ctrl-C and SIGTERM checkpoint and stop with the
resume command (exit codes 130 and 143); a resume truncates metrics.jsonl to the rows its checkpoint vouches for.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from vaelab.core.errors import Interrupted, VaelabError, WriteError
from vaelab.core.threads import set_threads
from vaelab.data import DATA_ENV, DATASETS, Dataset, load_dataset
from vaelab.models import MODELS, DataSpec, Model, build_model
from vaelab.runs import (
    CHECKPOINT,
    MODEL_DIR,
    RunConfig,
    load_checkpoint,
    load_model_state,
    read_config,
    save_checkpoint,
    save_config,
    save_weights,
)
from vaelab.runs.config import data_now
from vaelab.runs.folder import LOG, Claim, claim, default_run_name, has_run
from vaelab.runs.schedules import LR_SCHEDULES
from vaelab.training import fitters  # noqa: F401  (registration)
from vaelab.training.distributed import (
    Launch,
    broadcast_object,
    end_process,
    free_port,
    gather_objects,
    init_group,
    launched,
    rank_seed,
    rng_state,
    set_rng_state,
)
from vaelab.training.hooks import EPOCH_METRICS, FITTERS
from vaelab.training.monitor import Monitor

EVAL_SEED = 2024  # validation noise is drawn from its own seeded stream, so it never shifts training
SIGNALS = {signal.SIGINT: ("interrupted (Ctrl-C)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143)}


class NonFiniteLoss(VaelabError):
    """A loss term became NaN or inf; the last good checkpoint and weights are kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda was asked for, but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def resume_hint(run_dir: Path) -> str:
    return f"resume with: vaelab train --resume {run_dir}"


class StopSignal:
    """SIGINT and SIGTERM, caught in the main thread. Before the loop runs they stop at once (nothing to save);
    once it runs (``armed``) they set a flag the loop reads at the next step boundary, checkpoints and stops.
    A second signal while armed stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self.run_dir: Path | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.armed and self.signum is None:
            self.signum = signum
            return
        raise self.interrupted(signum)

    def interrupted(self, signum: int | None = None) -> Interrupted:
        what, code = SIGNALS[signum or self.signum or signal.SIGINT]
        where = f"; {resume_hint(self.run_dir)}" if self.run_dir is not None and has_run(self.run_dir) else ""
        return Interrupted(f"{what}{where}", code)


def train(
    config: RunConfig | None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    epochs: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train ``config`` into ``run_dir`` (None: a fresh folder runs/MODEL-DATA-TIME), or continue the run there
    (``resume``: its config comes from its checkpoint); returns the run folder.

    ``epochs`` with ``resume`` trains a run, finished or not, on to that many epochs in all: the same weights as a
    run started with that many (the data order and the step-wise learning rate do not depend on the length; a
    cosine schedule does, so it is refused). ``threads`` with ``resume`` sets the resumed run's ``train.threads``.
    Launched by torchrun (or any launcher that sets RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT), every process calls this and they join one process group."""
    if epochs is not None and not resume:
        raise VaelabError("epochs= here extends a resumed run; give a new run its epochs in its config")
    if resume and run_dir is None:
        raise VaelabError("resume needs the run folder")
    if not resume:
        check_kind(config.model, config.data.name)
    launch = launched()
    if launch is not None:
        return _train_launched(config, run_dir, resume, epochs, launch)
    with StopSignal() as stop:
        folder = Path(run_dir) if run_dir is not None else default_run_name(config.model, config.data.name)
        with claim(folder, resume, unique=run_dir is None) as held:
            stop.run_dir = held.run_dir
            try:
                config, state = prepare(config, held.run_dir, resume, epochs)
                if threads and resume:
                    config = dataclasses.replace(config, train=dataclasses.replace(config.train, threads=threads))
                world = config.train.devices
                device = resolve_device(config.train.device)
                if world > 1 and device.type == "cuda" and torch.cuda.device_count() < world:
                    raise VaelabError(
                        f"--devices {world} needs {world} GPUs, but {torch.cuda.device_count()} are visible"
                    )
                if world == 1:
                    Trainer(config, held.run_dir, device, state, stop=stop).fit()
                else:
                    _spawn(config, held.run_dir, device, state, stop)
            except BaseException:
                held.undo()  # a run that never reached its first checkpoint leaves nothing behind
                raise
    return held.run_dir


def prepare(
    config: RunConfig | None, run_dir: Path, resume: bool, epochs: int | None
) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run config and, for a resume, the checkpoint to continue from (config.json healed from it)."""
    if not resume:
        return config, None
    if not has_run(run_dir):
        raise VaelabError(
            f"{run_dir} has no training checkpoint ({CHECKPOINT}): it holds no run that can be resumed; start it "
            "again with the command that made it (the folder may be reused)"
        )
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = RunConfig.from_dict(state["config"], f"{run_dir / CHECKPOINT}") if "config" in state else None
    try:
        on_disk = read_config(run_dir)
    except VaelabError:
        on_disk = None
    config = config or on_disk
    if config is None:
        raise VaelabError(f"{run_dir} has a checkpoint but no readable config.json; it cannot be resumed")
    if on_disk is None or on_disk.to_dict() != config.to_dict():
        save_config(run_dir, config)  # a kill between the checkpoint and config.json: the checkpoint is the truth
    if epochs is not None and epochs != config.train.epochs:
        config = _extend(config, state, run_dir, epochs)
    elif state.get("finished"):
        raise VaelabError(
            f"run {run_dir} already finished its {config.train.epochs} epochs; nothing to resume "
            f"(train it on with --resume {run_dir} --epochs N, N > {config.train.epochs})"
        )
    return config, state


def _extend(config: RunConfig, state: dict[str, Any], run_dir: Path, epochs: int) -> RunConfig:
    """A resumed run's config with ``epochs`` epochs, after checking that it can go on. config.json keeps the old
    length until the first checkpoint of the extension is written."""
    tc = config.train
    done = int(state["epoch"])
    if epochs <= done:
        raise VaelabError(f"run {run_dir} has trained {done} epochs; --epochs must be more than that, got {epochs}")
    if tc.lr_schedule == "cosine":
        raise VaelabError(
            f"run {run_dir} decays its learning rate over its {tc.epochs} epochs (lr_schedule=cosine), so a longer "
            "run would have had another schedule; start a new run with --epochs instead"
        )
    if tc.patience and state["bad_epochs"] >= tc.patience:
        raise VaelabError(f"run {run_dir} stopped early (no validation improvement for {tc.patience} epochs)")
    if tc.max_steps:
        raise VaelabError(
            f"run {run_dir} has a budget in steps (max_steps={tc.max_steps}); it is not trained on by epochs: start "
            "a new run with the budget it should have"
        )
    return dataclasses.replace(config, train=dataclasses.replace(tc, epochs=epochs))


# -- processes ---------------------------------------------------------------------------------------------------


def _spawn(config: RunConfig, run_dir: Path, device: torch.device, state: dict | None, stop: StopSignal) -> None:
    """``--devices N`` without a launcher: N local processes meet on 127.0.0.1. Ctrl-C reaches every worker (one
    process group); a SIGTERM to this process is passed on to them; a lost worker ends the run with one line."""
    world = config.train.devices
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = free_port()
    args = (world, port, config, run_dir, device.type, state is not None, errors)
    processes = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def forward(signum: int, frame: object) -> None:
        stop.signum = stop.signum or signum
        for p in processes.processes:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the workers themselves
        signal.signal(signal.SIGTERM, forward)
    try:
        while not processes.join(timeout=1.0):
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        said = {}
        while not errors.empty():
            rank, kind, message, code = errors.get()
            said[rank] = (kind, message, code)
        why = why_stopped(e, said, world, run_dir)
        if why is None:
            raise
        raise why from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def why_stopped(
    e: mp.ProcessRaisedException | mp.ProcessExitedException,
    said: dict[int, tuple[str, str, int]],
    world: int,
    run_dir: Path,
) -> VaelabError | None:
    """Why a spawned run stopped, from torch's exception for the first rank to stop and what each rank said (rank:
    kind, message, exit code): what that first rank said; else, if it died without a word (killed), that it died,
    not the SIGTERM the others then got from torch; else (it raised, say on a lost connection) what a rank that
    stopped on purpose said (a NaN on rank 0 ends rank 1's collectives). None: nobody said anything, and the first
    rank's own traceback is the answer."""
    first = said.get(e.error_index)
    if first is None and isinstance(e, mp.ProcessExitedException):
        how = f"was killed by {signal.Signals(-e.exit_code).name}" if e.exit_code < 0 else f"exited {e.exit_code}"
        return VaelabError(
            f"training process {e.error_index} of {world} {how}; the others were stopped and the last checkpoint is "
            f"kept: {resume_hint(run_dir)}"
        )
    if first is None and not said:
        return None
    kind, message, code = first or next(iter(said.values()))
    if kind == "Interrupted":
        return Interrupted(message, code)
    return {"NonFiniteLoss": NonFiniteLoss}.get(kind, VaelabError)(message)


def _worker(
    rank: int,
    world: int,
    port: int,
    config: RunConfig,
    run_dir: Path,
    device_type: str,
    resume: bool,
    errors: Any,
) -> None:
    # each worker reads the checkpoint itself: tensors handed to spawned processes would share one storage between
    # them (torch.multiprocessing), and every rank would then update the same optimizer moments
    state = load_checkpoint(run_dir / CHECKPOINT) if resume else None
    init_group(device_type, rank, world, "127.0.0.1", port)
    code = 0
    try:
        if device_type == "cuda":
            torch.cuda.set_device(rank)
            device = torch.device("cuda", rank)
        else:
            device = torch.device("cpu")
        with StopSignal() as stop:
            stop.run_dir = run_dir
            Trainer(config, run_dir, device, state, rank, world, stop).fit()
    except VaelabError as e:
        errors.put((rank, type(e).__name__, str(e), e.exit_code))
        code = e.exit_code
    finally:
        dist.destroy_process_group()
    end_process(code)  # any other exception went up to torch's spawn wrapper, which reports its traceback


def _train_launched(
    config: RunConfig | None, run_dir: str | os.PathLike | None, resume: bool, epochs: int | None, launch: Launch
) -> Path:
    """One process of a launcher's group (torchrun, srun): rank 0 claims the folder and reads the checkpoint, and
    every rank receives the config and the checkpoint from it (no shared file system needed)."""
    if run_dir is None:
        raise VaelabError("under a launcher (torchrun, srun) every rank must write into the same folder: pass --out")
    if config is not None and config.train.devices not in (1, launch.world):
        raise VaelabError(
            f"--devices {config.train.devices} disagrees with the launcher's WORLD_SIZE={launch.world}; drop --devices "
            "(the launcher decides the processes)"
        )
    device = resolve_device(config.train.device if config is not None else "auto")
    if device.type == "cuda":
        torch.cuda.set_device(launch.local_rank)
        device = torch.device("cuda", launch.local_rank)
    init_group(device.type, launch.rank, launch.world, launch.master_addr, launch.master_port)
    run_dir = Path(run_dir)
    try:
        with StopSignal() as stop:
            stop.run_dir = run_dir
            if launch.rank == 0:
                with claim(run_dir, resume) as held:
                    outcome = _prepare_launched(config, run_dir, resume, epochs, launch)
                    broadcast_object(outcome, 0)
                    _fit_launched(outcome, run_dir, device, launch, stop, held)
            else:
                _fit_launched(broadcast_object(None, launch.rank), run_dir, device, launch, stop, None)
    except RuntimeError as e:  # a rank lost (killed, its node gone): the collectives fail on the others
        if not (isinstance(e, dist.DistError) or any(w in str(e) for w in ("gloo", "NCCL", "Connection"))):
            raise
        first = str(e).splitlines()[0][:200]
        raise VaelabError(
            f"rank {launch.rank} of {launch.world} lost contact with the other ranks ({first}); the last checkpoint "
            f"is kept: {resume_hint(run_dir)}, under the same launcher"
        ) from None
    finally:
        dist.destroy_process_group()
    return run_dir


def _prepare_launched(config, run_dir, resume, epochs, launch):
    try:
        config, state = prepare(config, run_dir, resume, epochs)
    except VaelabError as e:
        return {"error": str(e)}
    if config.train.devices != launch.world:
        if state is not None:
            return {
                "error": f"run {run_dir} was trained by {config.train.devices} processes; resume it with as many "
                f"(the launcher started {launch.world})"
            }
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, devices=launch.world))
    return {"config": config, "state": state}


def _fit_launched(outcome, run_dir, device, launch, stop, held: Claim | None) -> None:
    if "error" in outcome:
        raise VaelabError(outcome["error"])
    try:
        Trainer(outcome["config"], run_dir, device, outcome["state"], launch.rank, launch.world, stop).fit()
    except BaseException:
        if held is not None:
            held.undo()
        raise


def check_kind(model: str, data: str) -> None:
    """Refuse a model on data of a kind it is not built for, naming the data sets of the kinds it takes."""
    kinds = MODELS.get(model).data_kinds
    kind = DATASETS.entry(data).meta.get("kind", "images")
    if kind not in kinds:
        fits = [e.name for e in DATASETS if e.meta.get("kind", "images") in kinds]
        raise VaelabError(
            f"{model} models {' or '.join(kinds)}, but {data} holds {kind}; choose a data set of its kind: "
            f"{', '.join(fits) or '(none built in)'}"
        )


# -- the trainer -------------------------------------------------------------------------------------------------


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        device: torch.device,
        state: dict[str, Any] | None = None,
        rank: int = 0,
        world: int = 1,
        stop: StopSignal | None = None,
    ) -> None:
        self.config, self.run_dir, self.device = config, Path(run_dir), device
        self.rank, self.world = rank, world
        self.stop = stop or StopSignal()
        tc = config.train
        if tc.threads or world > 1:  # else the process's own setting (the CLI applies the default policy)
            set_threads(tc.threads, share=int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.manual_seed(tc.seed)
        model_cls = MODELS.get(config.model)
        check_kind(config.model, config.data.name)
        binary = model_cls.needs_binary_data(config.model_config)
        # a resumed run whose recorded data folder is gone reads $VAELAB_DATA (the data spec must still match)
        data = config.data if state is None else data_now(config.data)
        self.data: Dataset = load_dataset(  # a slow read (the whole dSprites grid) shows its progress on rank 0
            data, tc.seed, device, binary, root=run_dir, world=world, log=self.run_dir / LOG, progress=rank == 0
        )
        spec = DataSpec(self.data.shape, self.data.size("train"))
        if config.data_spec is not None and config.data_spec != spec:
            raise VaelabError(
                f"the data of {run_dir} changed since the run started: it was {config.data_spec}, now {spec}; "
                f"put the data the run was trained on back in {config.data.data_dir or 'its folder'} (or point "
                f"{DATA_ENV} at it)"
            )
        self.config = config = dataclasses.replace(config, data_spec=spec)
        self.model: Model = build_model(config.model, spec, config.model_config).to(device)
        self.model.check_data(self.data.extremes())
        if rank > 0:  # rank 0 keeps the run's stream; the others draw their own noise
            torch.manual_seed(rank_seed(tc.seed, rank))
        self.steps_per_epoch = self.data.steps_per_epoch(tc.batch_size * world)
        self.total_steps = self.steps_per_epoch * tc.epochs
        if tc.max_steps:  # a budget in steps: the run ends there, mid-epoch if need be (and a cosine decays to it)
            self.total_steps = min(self.total_steps, tc.max_steps)
        # the fused kernel updates all parameters in one C++ pass (784-512-16 VAE, 1 CPU thread: 7.4 vs 11.9 ms/step)
        fused = device.type in ("cpu", "cuda")
        groups = self.model.param_groups(tc.lr)
        # train.alternate=K: (encoder, decoder) parameters; steps [2jK, (2j+1)K) freeze the first, the next K the second
        self.phases = self.model.alternation_groups() if tc.alternate else None
        self.optimizer = torch.optim.Adam(groups, lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)
        self.schedule = LR_SCHEDULES.get(tc.lr_schedule)  # looked up once, not at every step
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.data_rng = torch.Generator().manual_seed(tc.seed)
        self.epoch_rng_state = self.data_rng.get_state()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_val, self.bad_epochs, self.best_epoch = math.inf, 0, -1
        self.autocast_dtype = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[tc.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "16-mixed")
        self.metrics_rows: int | None = 0
        # the running sums of the logging interval: checkpointed, so a resume logs the very same numbers
        self.names: list[str] | None = None
        self.sums: Tensor | None = None
        self.count = 0
        self.resumed = state is not None
        if state is not None:
            self._restore(state)
        self.net = DistributedDataParallel(self.model) if world > 1 else self.model
        self._last_checkpoint = self.step
        self.monitor: Monitor | None = None

    def _lr_factor(self, step: int) -> float:
        return self.schedule(step, self.config.train, self.steps_per_epoch, self.total_steps)

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> None:
        tc = self.config.train
        if not self.resumed:
            self._checkpoint()  # the first file that makes the folder a run: before anything refers to it
        what = f"training {self.config.model} on {self.config.data.name} into {self.run_dir}"
        self.monitor = monitor = Monitor(
            self.run_dir, self.total_steps, self.step, self.metrics_rows, enabled=self.rank == 0, title=what
        )
        for note in [self.data.note, *self.model.notes]:
            monitor.print(f"note: {note}")
        self.stop.armed = True
        try:
            if not self._fit_without_gradients(monitor):
                self._train(monitor)
            self._checkpoint(finished=True)
            if tc.patience and self.bad_epochs >= tc.patience:
                monitor.print(f"early stopping: no validation improvement for {tc.patience} epochs")
            monitor.print(f"done: {self.run_dir}")
        except WriteError as e:
            raise WriteError(
                f"{e}; the last checkpoint (step {self._last_checkpoint}) is intact: {resume_hint(self.run_dir)} "
                "once the disk can take it"
            ) from None
        finally:
            self.stop.armed = False
            monitor.close()

    def _fit_without_gradients(self, monitor: Monitor) -> bool:
        """A model type with a registered fitter (closed form, EM) is fitted by it instead of gradient steps, then
        validated and finished like a trained run. Interrupted, it keeps the first checkpoint: a resume fits anew."""
        fitter = FITTERS.lookup(self.model)
        if fitter is None:
            return False

        def log(row: dict[str, Any]) -> None:
            monitor.log({"split": "train", "epoch": 0, **row})

        steps = fitter(self.model, self.data.train, log, lambda: self.stop.signum is not None, monitor.print)
        if steps is None:
            return False
        if self.stop.signum is not None:
            raise self.stop.interrupted()
        self.step, self.epoch = steps, self.config.train.epochs
        self._validate(monitor)
        self._log_epoch(monitor)
        return True

    def _train(self, monitor: Monitor) -> None:
        tc = self.config.train
        seen = 0
        while (
            self.epoch < tc.epochs
            and self.step < self.total_steps
            and not (tc.patience and self.bad_epochs >= tc.patience)
        ):
            if self.batch_in_epoch == 0:  # else resuming mid-epoch: _restore rewound data_rng
                self.epoch_rng_state = self.data_rng.get_state()
            t0 = time.perf_counter()  # throughput counts training steps, not validation or checkpoints
            self.model.train()
            batches = self.data.train_batches(tc.batch_size, self.data_rng, self.rank, self.world, self.batch_in_epoch)
            cut = False  # the budget of max_steps ran out inside this epoch
            for x in batches:
                loss = self._step(x)
                values = torch.stack([loss.total.detach(), *(t.detach() for t in loss.terms.values())])
                if self.sums is None:
                    self.names, self.sums = ["loss", *loss.terms], torch.zeros_like(values)
                self.sums += values
                self.count += 1
                seen += x.shape[0] * self.world
                self.step += 1
                self.batch_in_epoch += 1
                monitor.advance(self.epoch + 1)
                epoch_end = self.batch_in_epoch == self.steps_per_epoch
                last = self.step == self.total_steps  # max_steps: the budget ends here, maybe mid-epoch
                if self.step % tc.log_every == 0 or epoch_end or last:
                    sums = self.sums
                    if self.world > 1:
                        dist.all_reduce(sums)
                        sums /= self.world
                    means = self._check(self.names, sums / self.count)
                    rate = seen / (time.perf_counter() - t0)
                    lr = self.scheduler.get_last_lr()[0]
                    record = {"split": "train", "step": self.step, "epoch": self.epoch, **means}
                    monitor.log({**record, "samples_per_s": rate, "lr": lr})
                    self.names, self.sums, self.count = None, None, 0
                    t0, seen = time.perf_counter(), 0
                    if self._should_stop():
                        self._checkpoint()
                        raise self.stop.interrupted()
                elif self.world == 1 and self.stop.signum is not None:
                    self._checkpoint()
                    raise self.stop.interrupted()
                if last and not epoch_end:
                    cut = True  # fit's closing checkpoint marks the run finished where its budget of steps ran out
                    break
                if not epoch_end and self.step - self._last_checkpoint >= tc.checkpoint_every:
                    self._checkpoint()  # every checkpoint_every steps; the epoch's end writes its own
            if not cut:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.epoch_rng_state = self.data_rng.get_state()  # a resume from this epoch's end draws the next order
            self._validate(monitor)
            self._log_epoch(monitor)
            self._checkpoint()

    def _step(self, x: Tensor):
        tc = self.config.train
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.net(x, step=self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        if self.phases is not None:  # the phase follows from the step count, so a resume continues it exactly
            for p in self.phases[(self.step // tc.alternate) % 2]:
                p.grad = None  # Adam skips a parameter without a gradient: its weights and moments stay as they are
        if tc.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss

    def _check(self, names: list[str], means: Tensor) -> dict[str, float]:
        """Read the interval's mean terms (the one sync per interval); stop on NaN/inf."""
        values = dict(zip(names, means.tolist()))
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            self._restore_last_good()
            raise NonFiniteLoss(
                f"training stopped at step {self.step}: the loss term(s) {', '.join(bad)} became non-finite "
                f"({', '.join(f'{k}={values[k]}' for k in bad)}). The last good state (step {self._last_checkpoint}) "
                f"is kept in {self.run_dir}/{CHECKPOINT} and {MODEL_DIR}/; try {self._nan_advice()}"
            )
        return values

    def _nan_advice(self) -> str:
        tc = self.config.train
        advice = [f"a lower --lr (now {tc.lr:g})"]
        if not tc.grad_clip:
            advice.append("--set grad_clip=1")
        if tc.precision != "32":
            advice.append("--precision 32")
        return ", ".join(advice[:-1]) + (" or " if len(advice) > 1 else "") + advice[-1]

    @torch.no_grad()
    def _validate(self, monitor: Monitor) -> None:
        if self.data.size("val") == 0:
            if self.rank == 0:
                save_weights(self.run_dir, self.model)
            return
        self.model.eval()
        epoch = self.epoch + (self.batch_in_epoch > 0)  # a budget of max_steps that ends inside epoch E: E
        monitor.describe(f"validating epoch {epoch}")  # shown until the next training step
        sums: dict[str, float] = {}
        n = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED)
            for x in self.data.eval_batches("val", self.config.train.eval_batch_size):
                loss = self.model.loss(x)
                for k, v in {"loss": loss.total, **loss.terms}.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(x)
                n += len(x)
        monitor.describe(f"epoch {epoch}")
        means = {k: v / n for k, v in sums.items()}
        val = means["loss"]
        if not math.isfinite(val):
            self._restore_last_good()
            raise NonFiniteLoss(
                f"the validation loss became non-finite at epoch {self.epoch}; the last good state (step "
                f"{self._last_checkpoint}) is kept; try {self._nan_advice()}"
            )
        monitor.log({"split": "val", "step": self.step, "epoch": epoch, **means})
        if val < self.best_val:
            self.best_val, self.bad_epochs, self.best_epoch = val, 0, epoch
            if self.rank == 0:
                save_weights(self.run_dir, self.model)
        else:
            self.bad_epochs += 1

    @torch.no_grad()
    def _log_epoch(self, monitor: Monitor) -> None:
        """The model's own once-per-epoch numbers (every rank calls it: a model may reset statistics there)."""
        self.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED)
            record: dict[str, Any] = {}
            for metrics in EPOCH_METRICS.all(self.model):
                record.update(metrics(self.model, self.data, self.step))
        if record:
            monitor.log({"split": "epoch", "step": self.step, "epoch": self.epoch, **record})

    # -- checkpoints, interrupts ------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_rng": self.epoch_rng_state,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "world": self.world,
            "metrics_rows": self.monitor.rows if self.monitor is not None else self.metrics_rows,
            "finished": False,
        }

    def _checkpoint(self, finished: bool = False) -> None:
        """Every rank's RNG state goes to rank 0, which writes the checkpoint, then config.json if it changed."""
        own = {
            "rng": rng_state(self.device),
            "interval": {
                "names": self.names,
                "sums": None if self.sums is None else self.sums.cpu(),
                "count": self.count,
            },
        }
        ranks = [own] if self.world == 1 else gather_objects(own, self.world)
        if self.rank == 0:
            if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
                self._restore_last_good()
                raise NonFiniteLoss(f"the weights became non-finite at step {self.step}; the last good state is kept")
            save_checkpoint(self.run_dir, {**self._state(), "ranks": ranks, "finished": finished})
            try:
                same = read_config(self.run_dir).to_dict() == self.config.to_dict()
            except VaelabError:
                same = False
            if not same:
                save_config(self.run_dir, self.config)
        if self.world > 1:
            dist.barrier()  # no rank stops (and takes the others down) before rank 0 has written
        self._last_checkpoint = self.step

    def _restore(self, state: dict[str, Any]) -> None:
        saved_world = state.get("world", 1)
        if saved_world != self.world:
            raise VaelabError(
                f"run {self.run_dir} was trained by {saved_world} process(es) and resumes exactly only with as many; "
                f"it was asked to resume with {self.world} (--devices)"
            )
        load_model_state(self.model, state["model"], self.run_dir / CHECKPOINT)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.epoch_rng_state = state["epoch_rng"]
        self.data_rng.set_state(self.epoch_rng_state)
        if "ranks" in state:  # each rank's own RNG state and logging interval
            own = state["ranks"][self.rank]
            set_rng_state(own["rng"], self.device)
            interval = own["interval"]
            self.names, self.count = interval["names"], interval["count"]
            self.sums = None if interval["sums"] is None else interval["sums"].to(self.device)
        else:  # a checkpoint of an earlier vaelab: one RNG state for every rank
            set_rng_state({"torch": state["torch_rng"], "cuda": state.get("cuda_rng")}, self.device)
        self.best_val, self.best_epoch, self.bad_epochs = state["best_val"], state["best_epoch"], state["bad_epochs"]
        self.metrics_rows = state.get("metrics_rows")  # None: a checkpoint of an earlier vaelab

    def _restore_last_good(self) -> None:
        """After a NaN: make RUN/model/ hold the weights of the last good checkpoint, if it holds none yet."""
        if self.rank != 0:
            return
        path = self.run_dir / CHECKPOINT
        if path.exists() and not (self.run_dir / MODEL_DIR).exists():
            load_model_state(self.model, load_checkpoint(path)["model"], path)
            save_weights(self.run_dir, self.model)

    def _should_stop(self) -> bool:
        if self.world == 1:
            return self.stop.signum is not None
        flag = torch.tensor([float(self.stop.signum or 0)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.stop.signum is None:
            self.stop.signum = int(flag.item())
        return bool(flag.item())
