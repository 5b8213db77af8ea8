"""The thread policy: the CPUs this process may use by default, OMP_NUM_THREADS honoured, --threads on every
command that computes, a share per DDP process, one line for a bad count."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from cli_helpers import fails_with, run_cli
from vaelab.cli import build_parser
from vaelab.core import threads
from vaelab.core.errors import VaelabError
from vaelab.runs import make_run_config

COMPUTING = (
    "eval",
    "predict",
    "probe",
    "grad-variance",
    "disentanglement",
    "traverse",
    "latents",
    "sample",
    "train-prior",
)


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_available_cpus_is_the_affinity_mask():
    if hasattr(os, "sched_getaffinity"):
        assert threads.available_cpus() == len(os.sched_getaffinity(0))
    assert threads.available_cpus() >= 1


def test_policy(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve_threads() == 8
    assert threads.resolve_threads(share=3) == 2  # each of 3 DDP processes gets its share
    assert threads.resolve_threads(share=16) == 1
    assert threads.resolve_threads(6, share=2) == 3  # an explicit total, shared
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve_threads() == 3 and threads.resolve_threads(share=2) == 3  # per process already
    assert threads.resolve_threads(5) == 5  # an explicit count wins
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert threads.resolve_threads() == 8  # not a count: ignored
    assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2


def test_bad_counts(monkeypatch):
    with pytest.raises(VaelabError, match="--threads must be >= 1"):
        threads.check_threads(0)
    cpus = threads.available_cpus()
    assert threads.check_threads(cpus) is None
    assert "more than the" in threads.check_threads(cpus + 1)
    with pytest.warns(threads.ThreadsWarning, match="more than the"):
        threads.set_threads(cpus + 1)
    with pytest.raises(VaelabError, match="threads must be >= 0"):
        make_run_config("vae", "digits", {"threads": -1})
    assert make_run_config("vae", "digits", {"threads": 2}).train.threads == 2


@pytest.mark.parametrize("command", COMPUTING)
def test_every_computing_command_takes_threads(command):
    assert build_parser().parse_args([command, "RUN", "--threads", "3"]).threads == 3
    assert build_parser().parse_args(["train", "vae", "--threads", "3"]).threads == 3


def test_cli_refuses_zero_and_warns_over_the_cpus(capsys, tmp_path):
    err = fails_with(capsys, "--threads must be >= 1", "sample", str(tmp_path / "none"), "--threads", "0")
    assert len(err.strip().splitlines()) == 1
    fails_with(capsys, "--threads must be >= 1", "train", "vae", "--threads", "0", "--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    cpus = threads.available_cpus()
    code, _, err = run_cli(capsys, "sample", str(tmp_path / "none"), "--threads", str(cpus + 1))
    assert code == 2 and f"--threads {cpus + 1} is more than the {cpus} CPU(s)" in err
    assert torch.get_num_threads() == cpus + 1  # a warning, not a refusal


def test_cli_default_honours_omp(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    run_cli(capsys, "sample", str(tmp_path / "none"))
    assert torch.get_num_threads() == 2


def test_train_threads_reaches_the_run_and_a_resume(capsys, tmp_path):
    out = tmp_path / "r"
    tiny = ["--latent-dim", "2", "--set", "hidden=8", "--epochs", "1"]
    code, _, err = run_cli(capsys, "train", "vae", "--out", str(out), "--threads", "1", *tiny)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["threads"] == 1
    assert torch.get_num_threads() == 1
    resumed = tmp_path / "r2"
    shutil.copytree(out, resumed)
    code, _, err = run_cli(capsys, "train", "--resume", str(resumed), "--epochs", "2", "--threads", "2")
    assert code == 0, err
    assert json.loads((resumed / "config.json").read_text())["train"]["threads"] == 2
    assert torch.get_num_threads() == 2
