"""A newcomer's first hour (issue 22): the CLI as a new user meets it, from a fresh shell in another folder.

Every test starts the ``vaelab`` command in a subprocess on the embedded ``digits`` data with tiny epochs, so what
is checked is what a user sees: the exit code, stdout and stderr, and the files left behind.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from vaelab.core.progress import Progress

SRC = str(Path(__file__).resolve().parents[1] / "src")


def vaelab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``vaelab ARGS`` in ``cwd``, output captured (not a terminal), our source first on the path."""
    environ = {
        **os.environ,
        "PYTHONPATH": SRC,
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "80",
        **(env or {}),
    }
    command = [sys.executable, "-c", "import sys; from vaelab.cli import main; sys.exit(main())", *args]
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, the message names ``words``."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for w in words:
        assert w in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The user's working folder, with one small VAE run trained in it."""
    folder = tmp_path_factory.mktemp("home")
    ok(vaelab("train", "vae", "--epochs", "1", "--latent-dim", "2", "--out", "vae", cwd=folder))
    return folder


# -- 1. progress -------------------------------------------------------------------------------------------------


def test_heartbeat_writes_a_line_while_one_step_takes_longer_than_the_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_PROGRESS_SECONDS", "0.2")
    out = io.StringIO()
    log = tmp_path / "job.log"
    with Progress(2, "slow job", "steps", log=log, console=Console(file=out, width=80)) as p:
        time.sleep(1.0)  # one step, five intervals long
        p.advance()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("slow job: 0/2")]
    assert len(lines) >= 3, out.getvalue()  # the first line, then the heartbeat's during the step
    assert "elapsed" in lines[-1] and "ETA" in lines[-1]
    assert len([line for line in log.read_text().splitlines() if "slow job: 0/2" in line]) >= 3


def test_no_heartbeat_lines_after_close(monkeypatch):
    monkeypatch.setenv("VAELAB_PROGRESS_SECONDS", "0.05")
    out = io.StringIO()
    with Progress(1, "job", console=Console(file=out, width=80)) as p:
        p.advance()
    written = out.getvalue()
    time.sleep(0.3)
    assert out.getvalue() == written


def test_bar_count_and_eta_stay_visible_at_80_columns():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    p = Progress(1000, "evaluating a long description of the job", "steps", console=console)
    p.status("loss 93.2  reconstruction 80.1  kl 13.1  elbo -93.2  mse 0.0312  codebook_perplexity 400.2 " * 2)
    p.advance(500)
    p._bar.refresh()
    p.close()
    screen = out.getvalue()
    assert "500/1000" in screen
    assert re.search(r"\d:\d\d:\d\d|-:--:--", screen), screen  # rich's ETA column


def test_eval_off_a_terminal_shows_progress_lines(home):
    r = ok(vaelab("eval", "vae", "--iw-samples", "10", cwd=home, env={"VAELAB_PROGRESS_SECONDS": "0"}))
    assert re.search(r"eval test, IWAE K=10: 1/1 batches", r.stderr), r.stderr
