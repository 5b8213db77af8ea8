"""A newcomer's first hour (issue 22): the CLI as a new user meets it, from a fresh shell in another folder.

Every test starts the ``vaelab`` command in a subprocess on the embedded ``digits`` data with tiny epochs, so what
is checked is what a user sees: the exit code, stdout and stderr, and the files left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from vaelab.core.progress import Progress

SRC = str(Path(__file__).resolve().parents[1] / "src")


def vaelab(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """``vaelab ARGS`` run in ``cwd`` with ``env`` added, output captured (not a terminal). ``fresh``: in a new
    Python process (as from a shell; slow on a loaded machine), else in this one, with cwd, environment and
    stdout/stderr swapped for the call (the CLI prints through rich consoles bound to sys.stdout/sys.stderr)."""
    if fresh:
        environ = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "COLUMNS": "80", **(env or {})}
        command = [sys.executable, "-c", "import sys; from vaelab.cli import main; sys.exit(main())", *args]
        return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)
    from vaelab.cli import main

    out, err, here, saved = io.StringIO(), io.StringIO(), os.getcwd(), dict(os.environ)
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


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


# -- 2. sample, traverse, latents on data that are not images -----------------------------------------------------


@pytest.fixture
def vector_run(tmp_path, monkeypatch):
    """A VAE trained on a registered data set of 10-d vectors (no built-in one holds vectors)."""
    import numpy as np

    import vaelab
    from vaelab.data import DATASETS, ImageArrays

    def vectors(data_dir):
        r = np.random.default_rng(0)
        x = r.random((360, 10), dtype=np.float32)
        return ImageArrays(x[:300], x[300:], np.zeros(300, int), np.zeros(60, int))

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    DATASETS.register("vectors-test", "10-d vectors", kind="vectors", shape=(10,))(vectors)
    return vaelab.train("vae", "vectors-test", tmp_path / "vec", epochs=1, latent_dim=2, likelihood="gaussian")


def test_sample_traverse_latents_on_vector_data(capsys, vector_run, tmp_path):
    import numpy as np

    from vaelab.cli import main

    assert main(["sample", str(vector_run.path), "-n", "5"]) == 0
    samples = np.load(vector_run.path / "figures" / "samples.npy")
    assert samples.shape == (5, 10) and np.isfinite(samples).all()
    assert main(["sample", str(vector_run.path), "--out", str(tmp_path / "s.png")]) == 2
    assert main(["traverse", str(vector_run.path)]) == 2
    assert main(["latents", str(vector_run.path)]) == 0
    out, err = capsys.readouterr()
    assert "give --out" in err and str(tmp_path / "s.npy") in err
    assert "latent traversals draw images" in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "s.png").exists()


# -- 3. a relative --data-dir ------------------------------------------------------------------------------------


def test_relative_data_dir_is_stored_absolute_and_a_moved_folder_falls_back_to_vaelab_data(tmp_path):
    import json

    (tmp_path / "data").mkdir()
    ok(vaelab("train", "vae", "--epochs", "1", "--data-dir", "data", "--out", "r", cwd=tmp_path))
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["data"]["data_dir"]
    assert recorded == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok(vaelab("latents", str(tmp_path / "r"), cwd=elsewhere))
    (tmp_path / "data").rmdir()  # the recorded folder is gone: $VAELAB_DATA (digits need no files anyway)
    ok(vaelab("eval", str(tmp_path / "r"), "--iw-samples", "2", cwd=elsewhere, env={"VAELAB_DATA": str(elsewhere)}))


def test_a_missing_data_folder_never_says_to_drop_an_option_that_was_not_passed(tmp_path):
    r = vaelab("train", "vae", "--data", "mnist", "--epochs", "1", cwd=tmp_path, env={"VAELAB_DATA": str(tmp_path)})
    err = one_line_error(r, "mnist not found", "VAELAB_DATA")
    assert "drop --data-dir" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "command",
    ["eval", "predict", "probe", "grad-variance", "disentanglement", "traverse", "latents", "sample", "train-prior"],
)
def test_every_command_that_loads_a_run_takes_device_and_data_dir(command):
    from vaelab.cli import build_parser

    args = build_parser().parse_args([command, "RUN", "--device", "cpu", "--data-dir", "D"])
    assert (args.run, args.device, args.data_dir) == ("RUN", "cpu", "D")


# -- 6. help, version, the hint, signals --------------------------------------------------------------------------


def test_every_option_has_help_and_shows_its_default():
    from vaelab.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in commands.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
                if not (action.default is None or action.default is False or action.default == []):
                    flat = " ".join(text.split())
                    assert f"(default: {action.default})" in flat, (name, action.option_strings, flat)
    flat = " ".join(commands.choices["train"].format_help().split())
    for words in ("--epochs EPOCHS passes over the training set (default: 10", "(default: 100)", "(default: 0.001)"):
        assert words in flat
    sample = " ".join(commands.choices["sample"].format_help().split())
    assert "(default: 64)" in sample and "--seed SEED seed of the draws (default: 0)" in sample


def test_version(tmp_path):
    import vaelab as package

    r = ok(vaelab("--version", cwd=tmp_path, fresh=True))
    assert r.stdout.strip() == f"vaelab {package.__version__}"


def test_next_hint_never_wraps_off_a_terminal(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "run"
    r = ok(vaelab("train", "ae", "--epochs", "1", "--out", str(deep), cwd=tmp_path))
    assert f"next: vaelab eval {deep}\n" in r.stdout


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_eval_stops_on_a_signal_with_the_shells_exit_code(home, signum, code):
    environ = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "VAELAB_PROGRESS_SECONDS": "0"}
    command = [sys.executable, "-c", "import sys; from vaelab.cli import main; sys.exit(main())"]
    p = subprocess.Popen(
        [*command, "eval", "vae", "--iw-samples", "100000"], cwd=home, env=environ, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a test run in the background ignores it
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a loaded machine takes long to start python and torch
    line = p.stderr.readline()  # the first progress line: the bound is running
    assert "eval test" in line, line
    time.sleep(0.5)
    p.send_signal(signum)
    _, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted" in err or "terminated" in err


# -- 4. nothing stale or silently overwritten ----------------------------------------------------------------------


def test_reports_are_keyed_by_their_settings_and_stamped_with_the_weights(home):
    import json

    from vaelab.core.pretrained import weights_id

    ok(vaelab("eval", "vae", "--iw-samples", "5", cwd=home))
    ok(vaelab("eval", "vae", "--split", "val", "--iw-samples", "5", cwd=home))
    test, val = (json.loads((home / "vae" / f"eval-{s}-k5.json").read_text()) for s in ("test", "val"))
    assert (test["split"], val["split"]) == ("test", "val")  # the val evaluation did not replace the test one
    assert test["num_examples"] != val["num_examples"]
    assert test["weights_id"] == weights_id(home / "vae" / "model") and test["written"].endswith("Z")
    assert val["command"] == "vaelab eval vae --split val --iw-samples 5"


def test_resume_lists_stale_reports_and_a_stale_vq_prior_is_refused(tmp_path):
    r = tmp_path
    ok(vaelab("train", "vqvae", "--epochs", "1", "--out", "vq", cwd=r))
    ok(vaelab("train-prior", "vq", "--epochs", "1", "--set", "channels=4", "--set", "layers=1", cwd=r))
    ok(vaelab("eval", "vq", cwd=r))
    ok(vaelab("sample", "vq", "-n", "4", cwd=r))
    resumed = ok(vaelab("train", "--resume", "vq", "--epochs", "3", cwd=r))
    flat = " ".join(resumed.stdout.split())
    assert "stale: vq/eval.json (it was computed from earlier weights); refresh it: vaelab eval vq" in flat
    assert "stale: vq/prior (it was fitted to the codes of earlier weights); refresh it: vaelab train-prior vq" in flat
    for command in (["sample", "vq"], ["eval", "vq"]):
        one_line_error(vaelab(*command, cwd=r), "vaelab train-prior vq")
    ok(vaelab("train-prior", "vq", "--epochs", "1", "--set", "channels=4", "--set", "layers=1", cwd=r))
    ok(vaelab("sample", "vq", "-n", "4", cwd=r))


def test_an_interrupted_train_prior_leaves_the_old_prior_and_its_metrics_alone(tmp_path):
    r = tmp_path
    ok(vaelab("train", "vqvae", "--epochs", "1", "--out", "vq", cwd=r))
    ok(vaelab("train-prior", "vq", "--epochs", "1", "--set", "channels=4", "--set", "layers=1", cwd=r))
    before = {p.name: p.read_bytes() for p in (r / "vq" / "prior").iterdir() if p.is_file()}
    environ = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "VAELAB_PROGRESS_SECONDS": "0"}
    command = [sys.executable, "-c", "import sys; from vaelab.cli import main; sys.exit(main())"]
    p = subprocess.Popen(
        [*command, "train-prior", "vq", "--epochs", "500", "--set", "channels=4", "--set", "layers=1"],
        cwd=r,
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in p.stderr:  # the new prior is training (its metrics.jsonl is open)
        if "epoch 1: 1/" in line:
            break
    p.send_signal(2)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    after = {p.name: p.read_bytes() for p in (r / "vq" / "prior").iterdir() if p.is_file()}
    assert after == before  # metrics.jsonl included: the new prior's rows are in prior-next/
    assert (r / "vq" / "prior-next" / "metrics.jsonl").exists()


# -- 5. messages ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae", "iwae", "ae", "dae", "cae", "sparse-ae", "ksparse-ae", "vqvae", "beta-vae"])
def test_loss_from_python_refuses_data_outside_the_bernoulli_support(name):
    import torch

    from vaelab.core.errors import VaelabError
    from vaelab.models import DataSpec, build_model

    model = build_model(name, DataSpec((1, 8, 8), 100))
    x = torch.rand(4, 1, 8, 8)
    model.loss(x)  # grey levels in [0, 1]: fine
    with pytest.raises(VaelabError, match=r"needs data in \[0, 1\], but the data range is \[0\.\d+, 255\]"):
        model.loss(torch.cat([x[:3], torch.full((1, 1, 8, 8), 255.0)]))


def test_tdvae_loss_refuses_data_outside_the_bernoulli_support():
    import torch

    from vaelab.core.errors import VaelabError
    from vaelab.models import DataSpec, build_model

    model = build_model("tdvae", DataSpec((8, 1, 12, 12), 100), max_jump=2)
    with pytest.raises(VaelabError, match="needs data in"):
        model.loss(torch.rand(2, 8, 1, 12, 12) * 3)


def test_eval_tables_show_only_what_applies(tmp_path):
    ok(vaelab("train", "vqvae", "--epochs", "1", "--out", "vq", cwd=tmp_path))
    ok(vaelab("train", "dae", "--epochs", "1", "--out", "dae", cwd=tmp_path))
    vq = ok(vaelab("eval", "vq", cwd=tmp_path)).stdout
    for key in ("latent_dim", "active_units", "dead_units"):
        assert key not in vq
    assert "codebook_usage" in vq
    dae = ok(vaelab("eval", "dae", cwd=tmp_path)).stdout
    assert "active_units" not in dae and "active_fraction" in dae  # a code has no posterior to count active units of


def test_bad_model_options_and_sizes_give_one_line(tmp_path):
    tdvae = vaelab("train", "tdvae", "--data", "digits", cwd=tmp_path)
    one_line_error(tdvae, "tdvae models sequences", "moving-digits")
    err = one_line_error(
        vaelab("train", "tdvae", "--data", "moving-digits", "--set", "frames=1", cwd=tmp_path), "at least 2 frames"
    )
    assert "max_jump <= 0" not in err
    one_line_error(vaelab("train", "cae", "--set", "activation=relu", "--out", "cae", cwd=tmp_path), "activation=relu")
    one_line_error(vaelab("train", "vae", "--batch-size", "100000", "--out", "big", cwd=tmp_path), "batch size 100000")
    assert not (tmp_path / "cae").exists() and not (tmp_path / "big").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_grad_variance_on_a_model_without_a_latent_sample_says_it_needs_a_vae(tmp_path):
    ok(vaelab("train", "ae", "--epochs", "1", "--out", "ae", cwd=tmp_path))
    err = one_line_error(vaelab("grad-variance", "ae", cwd=tmp_path), "needs a run of", "vae", "iwae")
    assert "baseline" not in err


def test_nan_advice_suggests_precision_32_only_to_a_mixed_precision_run(tmp_path):
    err = one_line_error(vaelab("train", "vae", "--lr", "1e12", "--epochs", "2", "--out", "nan", cwd=tmp_path))
    assert "non-finite" in err and "--precision 32" not in err and "grad_clip" in err
