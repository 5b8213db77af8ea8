"""Crash-proof run folders: every signal, race and disk fault leaves a run that resumes exactly (or a folder that can
be trained into again), with one line per fault; multi-process runs are exact and draw independent noise."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import vaelab
from cli_helpers import fails_with, run_cli
from vaelab.core.errors import Interrupted, VaelabError, WriteError
from vaelab.core.pretrained import atomic_write
from vaelab.runs import load_checkpoint, read_config, read_metrics
from vaelab.runs.folder import claim, new_run_dir
from vaelab.training import trainer as trainer_module

VAELAB = [sys.executable, "-m", "vaelab.cli"]
TINY = {"latent_dim": 3, "hidden": (16,), "batch_size": 100, "seed": 0}
LONG = ["--epochs", "400", "--latent-dim", "3", "--set", "hidden=16", "--set", "log_every=5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def start(run: Path, *extra: str, model: str = "vae", data: str = "digits") -> subprocess.Popen:
    args = [*VAELAB, "train", model, "--data", data, "--out", str(run), *LONG, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_rows(run: Path, rows: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        if len(read_metrics(run)) >= rows:
            return
        time.sleep(0.05)
    raise AssertionError("training did not get under way")


# 1. extending a run --------------------------------------------------------------------------------------------------


def test_an_extension_that_dies_before_its_first_checkpoint_can_be_extended_again(tmp_path, monkeypatch):
    run = vaelab.train("vae", "digits", tmp_path / "r", epochs=1, **TINY).path
    before = read_config(run).train.epochs

    def dies(self, monitor):  # an error before the extension's first new checkpoint
        raise VaelabError("the data went away")

    monkeypatch.setattr(trainer_module.Trainer, "_train", dies)
    with pytest.raises(VaelabError, match="the data went away"):
        vaelab.resume(run, epochs=2)
    monkeypatch.undo()
    assert read_config(run).train.epochs == before == 1  # config.json was not changed ahead of the checkpoint
    assert load_checkpoint(run / "checkpoint.pt")["finished"]
    vaelab.resume(run, epochs=2)
    straight = vaelab.train("vae", "digits", tmp_path / "s", epochs=2, **TINY).path
    same_weights(run, straight)
    assert read_config(run).train.epochs == 2


def test_the_checkpoint_heals_config_json(tmp_path):
    """A kill between the checkpoint and config.json: the checkpoint carries the run config and wins."""
    run = vaelab.train("vae", "digits", tmp_path / "r", epochs=1, **TINY).path
    (run / "config.json").write_text("{half a fi")
    vaelab.resume(run, epochs=2)
    assert read_config(run).train.epochs == 2


# 2. two runs, one folder ---------------------------------------------------------------------------------------------


def test_a_folder_held_by_a_training_process_is_refused(tmp_path, capsys):
    run = tmp_path / "shared"
    proc = start(run)
    try:
        wait_for_rows(run, 1, proc)
        pid = str(proc.pid)
        err = fails_with(
            capsys, f"another vaelab process (pid {pid}) is training in {run}", "train", "vae", "--out", str(run)
        )
        err = fails_with(capsys, "another vaelab process", "train", "--resume", str(run))
        assert "Traceback" not in err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 143


def test_default_run_names_never_collide():
    base = Path("runs-test-collide") / "vae-digits-20260101-000000"
    made: list[Path] = []
    try:
        threads = [threading.Thread(target=lambda: made.append(new_run_dir(base))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    finally:
        for p in made:
            p.rmdir()
        base.parent.rmdir()


def test_a_claimed_folder_refuses_a_second_claim(tmp_path):
    with claim(tmp_path / "x", resume=False):
        with pytest.raises(VaelabError, match="another vaelab process"):
            with claim(tmp_path / "x", resume=False):
                pass
    with claim(tmp_path / "x", resume=False):  # released with its holder
        pass


# 3. a signal during start-up -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_leaves_a_folder_that_can_be_trained_into(tmp_path, sig):
    run = tmp_path / "early"
    args = [*VAELAB, "train", "vae", "--data", "dsprites-small", "--out", str(run), "--epochs", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not (run / ".lock").exists() and time.time() < deadline:  # it has claimed the folder: now loading data
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err and "resume" not in err  # nothing to resume: the folder holds no run
    assert not (run / "checkpoint.pt").exists() and not (run / "config.json").exists()
    done = subprocess.run([*VAELAB, "train", "vae", "--out", str(run), "--epochs", "1"], capture_output=True, env=ENV)
    assert done.returncode == 0, done.stderr


# 4. SIGTERM is Ctrl-C ------------------------------------------------------------------------------------------------


def test_sigterm_checkpoints_where_it_stopped_and_the_resume_is_exact(tmp_path):
    run = tmp_path / "term"
    # 40 epochs (1560 steps): long enough that the signal lands mid-run on a fast, idle machine too (3 epochs were
    # over before the signal there)
    proc = start(run, "--set", "checkpoint_every=100000", "--epochs", "40")
    wait_for_rows(run, 6, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert f"terminated (SIGTERM); resume with: vaelab train --resume {run}" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoint.pt")
    logged = max(r["step"] for r in read_metrics(run))
    assert state["step"] >= logged >= 20 and not state["finished"]  # the work since the last checkpoint was kept
    done = subprocess.run([*VAELAB, "train", "--resume", str(run)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    args = [*VAELAB, "train", "vae", "--out", str(straight), *LONG, "--set", "checkpoint_every=100000"]
    args += ["--epochs", "40"]
    subprocess.run(args, check=True, capture_output=True, env=ENV)
    same_weights(run, straight)
    steps = [(r["split"], r["step"]) for r in read_metrics(run)]
    assert len(steps) == len(set(steps))  # 6. the resume re-logged nothing: every row once
    assert steps == [(r["split"], r["step"]) for r in read_metrics(straight)]


def test_a_lost_worker_ends_the_run_with_one_line_and_it_resumes(tmp_path):
    run = tmp_path / "ddp"
    proc = start(run, "--devices", "2", "--set", "checkpoint_every=10")
    wait_for_rows(run, 4, proc)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 2, children
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "was killed by SIGKILL" in err and f"vaelab train --resume {run}" in err, err
    assert "Traceback" not in err and "ProcessExitedException" not in err
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] > 0
    more = str(state["epoch"] + 1)  # one epoch more than the checkpoint holds, not all 400
    done = subprocess.run(
        [*VAELAB, "train", "--resume", str(run), "--epochs", more], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 0, done.stderr


def test_the_first_rank_to_stop_says_why_and_a_killed_rank_is_not_hidden_by_the_others_stopping(tmp_path):
    """torch SIGTERMs the survivors of a dead rank, and they report being interrupted: the killed rank is the cause."""
    killed = mp.ProcessExitedException("", error_index=1, error_pid=7, exit_code=-signal.SIGKILL, signal_name="SIGKILL")
    stopped = {0: ("Interrupted", "terminated (SIGTERM)", 143)}
    why = trainer_module.why_stopped(killed, stopped, 2, tmp_path)
    assert type(why) is VaelabError and "process 1 of 2 was killed by SIGKILL" in str(why)
    nan = {0: ("NonFiniteLoss", "training stopped at step 9: loss became non-finite", 3)}
    lost = mp.ProcessRaisedException("RuntimeError: Connection closed by peer", error_index=1, error_pid=7)
    why = trainer_module.why_stopped(lost, nan, 2, tmp_path)
    assert isinstance(why, trainer_module.NonFiniteLoss)  # rank 0's NaN, not rank 1's lost connection
    own = mp.ProcessExitedException("", error_index=0, error_pid=6, exit_code=130)
    why = trainer_module.why_stopped(own, {0: ("Interrupted", "interrupted (Ctrl-C)", 130)}, 2, tmp_path)
    assert isinstance(why, Interrupted) and why.exit_code == 130
    assert trainer_module.why_stopped(lost, {}, 2, tmp_path) is None  # nobody said why: the traceback itself


# 5. multi-process runs: exact and independent ------------------------------------------------------------------------


def test_every_rank_draws_its_own_noise_and_a_ddp_resume_is_exact(tmp_path):
    options = {**TINY, "devices": 2, "batch_size": 50}
    two = vaelab.train("vae", "digits", tmp_path / "two", epochs=2, **options).path
    state = load_checkpoint(two / "checkpoint.pt")
    assert state["world"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])  # own streams
    half = vaelab.train("vae", "digits", tmp_path / "half", epochs=1, **options).path
    vaelab.resume(half, epochs=2)
    same_weights(two, half)
    state = load_checkpoint(half / "checkpoint.pt")
    config = vaelab.RunConfig.from_dict(state["config"])
    one = dataclasses.replace(config, train=dataclasses.replace(config.train, devices=1))
    with pytest.raises(VaelabError, match=r"was trained by 2 process\(es\) and resumes exactly only with as many"):
        trainer_module.Trainer(one, half, torch.device("cpu"), state)


def test_a_ddp_vq_resume_is_exact(tmp_path):
    options = dict(
        epochs=2, batch_size=50, devices=2, downsample=1, hidden_channels=8, residual_channels=4, residual_blocks=1,
        code_dim=4, codebook_size=8, restart_after=3,
    )  # fmt: skip
    two = vaelab.train("vqvae", "digits", tmp_path / "two", **options).path
    half = vaelab.train("vqvae", "digits", tmp_path / "half", **{**options, "epochs": 1}).path
    vaelab.resume(half, epochs=2)
    same_weights(two, half)


def test_two_processes_estimate_the_same_loss_as_one_with_twice_the_batch(tmp_path):
    """Equal in distribution: a stochastic model's mean training loss over the first epochs agrees within noise."""
    two = vaelab.train("vae", "digits", tmp_path / "two", epochs=3, **{**TINY, "batch_size": 50, "devices": 2})
    one = vaelab.train("vae", "digits", tmp_path / "one", epochs=3, **{**TINY, "batch_size": 100})
    a = [r["loss"] for r in two.metrics() if r["split"] == "train"]
    b = [r["loss"] for r in one.metrics() if r["split"] == "train"]
    assert len(a) == len(b)
    assert abs(sum(a) / len(a) - sum(b) / len(b)) < 0.02 * abs(sum(b) / len(b))


# 6. metrics.jsonl ----------------------------------------------------------------------------------------------------


def test_a_partial_last_line_is_dropped_with_a_warning(tmp_path):
    run = vaelab.train("vae", "digits", tmp_path / "r", epochs=1, **TINY).path
    rows = read_metrics(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 99, "lo')  # a kill mid-write
    with pytest.warns(UserWarning, match="incomplete line"):
        assert read_metrics(run) == rows
    vaelab.resume(run, epochs=2)  # the resume cuts the file back to its checkpoint's rows, then goes on
    again = read_metrics(run)
    assert again[: len(rows)] == rows and all("step" in r for r in again)


# 7. disk faults, damaged files ---------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(tmp_path, monkeypatch, capsys):
    run = vaelab.train("vae", "digits", tmp_path / "r", epochs=1, **TINY).path
    good = weights(run)
    real_save = torch.save

    def full(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 basic_ios::clear")

    monkeypatch.setattr(torch, "save", full)
    err = fails_with(
        capsys, "is the disk full or the folder read-only?", "train", "--resume", str(run), "--epochs", "2"
    )
    assert f"cannot write {run / 'checkpoint.pt'}" in err and "resume with: vaelab train --resume" in err
    monkeypatch.undo()
    for k, v in weights(run).items():
        assert torch.equal(v, good[k])  # the failed write left the last checkpoint as it was
    assert not list(run.glob(".*.tmp"))


def test_no_space_and_read_only_folders_name_the_path(tmp_path, monkeypatch):
    def refuse(code):
        def replace(src, dst):
            raise OSError(code, os.strerror(code), str(dst))

        return replace

    monkeypatch.setattr(os, "replace", refuse(errno.ENOSPC))
    with pytest.raises(WriteError, match=r"cannot write .*a\.json: no space is left on the device"):
        atomic_write(tmp_path / "a.json", lambda p: Path(p).write_text("{}"))
    monkeypatch.setattr(os, "replace", refuse(errno.EROFS))
    with pytest.raises(WriteError, match="Read-only file system: the folder is read-only or not yours"):
        atomic_write(tmp_path / "a.json", lambda p: Path(p).write_text("{}"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_eval_prints_its_numbers_even_when_it_cannot_write_them(tmp_path, monkeypatch, capsys, vae_run):
    def cannot(path, obj):
        raise WriteError(f"cannot write {path}: Read-only file system")

    monkeypatch.setattr(sys.modules["vaelab.runs.reports"], "write_json", cannot)  # reports are written there
    code, out, err = run_cli(capsys, "eval", str(vae_run.path), "--iw-samples", "5")
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    assert "elbo" in out and "nll" in out  # the table was printed first


def test_a_config_without_a_model_is_one_line(tmp_path, capsys, vae_run):
    run = tmp_path / "r"
    shutil.copytree(vae_run.path, run)
    config = json.loads((run / "config.json").read_text())
    del config["model"]
    (run / "config.json").write_text(json.dumps(config))
    fails_with(capsys, 'names no model (its "model" key is missing)', "eval", str(run))


# 8. the smaller points -----------------------------------------------------------------------------------------------


def test_checkpoint_every_means_what_it_says_and_each_epoch_writes_one(tmp_path, monkeypatch):
    steps = []
    real = trainer_module.save_checkpoint

    def record(run_dir, state):
        steps.append((state["step"], state["batch_in_epoch"]))
        real(run_dir, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", record)
    vaelab.train("vae", "digits", tmp_path / "r", epochs=2, checkpoint_every=4, log_every=50, **TINY)
    # 13 steps an epoch (1350 / 100): step 0, every 4 steps, each epoch's end once, and the finish
    assert steps == [(0, 0), (4, 4), (8, 8), (12, 12), (13, 0), (17, 4), (21, 8), (25, 12), (26, 0), (26, 0)]


def test_orphaned_temp_files_are_removed_and_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = vaelab.train("vae", "digits", tmp_path / "r", epochs=1, **TINY).path
        mode = stat.S_IMODE((run / "checkpoint.pt").stat().st_mode)
        assert mode == 0o644, oct(mode)
        assert stat.S_IMODE((run / "model" / "model.safetensors").stat().st_mode) == 0o644
        orphan = run / ".checkpoint.pt.k1ll3d.tmp"
        orphan.write_bytes(b"x" * 1000)
        vaelab.resume(run, epochs=2)
        assert not orphan.exists()
    finally:
        os.umask(old)


def test_an_infinite_learning_rate_is_refused(capsys):
    fails_with(capsys, "lr must be a finite number > 0, got inf", "train", "vae", "--lr", "inf")
