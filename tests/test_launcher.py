"""Training under a launcher (torchrun, SLURM's srun): 2 nodes × 1 process through torchrun on localhost train the
weights of one process with twice the batch, a resume under torchrun continues exactly, and an incomplete or
inconsistent launcher environment is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaelab
from cli_helpers import fails_with
from vaelab.core.errors import VaelabError
from vaelab.runs import load_checkpoint
from vaelab.training.distributed import LAUNCH_VARS, Launch, free_port, launched

TORCHRUN = Path(sys.executable).with_name("torchrun")
COMMON = dict(seed=5, likelihood="gaussian", val_fraction=0, latent_dim=4, hidden=(32,))
FLAGS = ["--seed", "5", "--latent-dim", "4", "--set", "hidden=32", "--set", "likelihood=gaussian"]
ENV = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS} | {"OMP_NUM_THREADS": "1"}


def two_nodes(*train_args: str) -> list[subprocess.Popen]:
    """`vaelab train ...` on 2 nodes × 1 process: two torchrun agents (node ranks 0 and 1) meeting on localhost."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [
                str(TORCHRUN),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                "-m",
                "vaelab.cli",
                "train",
                *train_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        for node in (0, 1)
    ]


def finish(nodes: list[subprocess.Popen]) -> list[str]:
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    for p, out in zip(nodes, outs):
        assert p.returncode == 0, out
    return outs


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_two_torchrun_nodes_match_one_process_with_twice_the_batch_and_resume_exactly(tmp_path):
    straight, half = tmp_path / "straight", tmp_path / "half"
    data = ["ae", "--data", "digits", "--batch-size", "50", "--set", "val_fraction=0", *FLAGS]
    runs = [
        two_nodes(*data, "--epochs", "2", "--out", str(straight)),
        two_nodes(*data, "--epochs", "1", "--out", str(half)),
    ]
    outs = [finish(nodes) for nodes in runs]
    assert all(f"next: vaelab eval {straight}" not in out for out in outs[0][1:])  # rank 0 alone reports
    one = vaelab.train("ae", "digits", tmp_path / "one", epochs=2, batch_size=100, **COMMON).path
    state = load_checkpoint(straight / "checkpoint.pt")
    assert state["world"] == 2 and len(state["ranks"]) == 2 and state["config"]["train"]["devices"] == 2
    w1, w2 = weights(one), weights(straight)
    moved = max(float((w1[k] - weights(half)[k]).abs().max()) for k in w1)
    assert moved > 1e-3  # the second epoch really changed the weights
    for k in w1:  # the launcher's 2 nodes × batch 50 = 1 process × batch 100, from the same seed
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)

    finish(two_nodes("--resume", str(half), "--epochs", "2"))  # every rank resumes from the checkpoint
    resumed = weights(half)
    for k in w2:
        assert torch.equal(resumed[k], w2[k]), k  # exactly the straight run's weights
    assert load_checkpoint(half / "checkpoint.pt")["finished"]


# bad input ------------------------------------------------------------------------------------------------------


FULL = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_a_complete_launcher_environment_is_read_and_none_is_no_launcher():
    assert launched({}) is None
    assert launched(FULL) == Launch(0, 2, 0, "127.0.0.1", 29500)
    srun = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    assert launched({**srun, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}) == Launch(1, 4, 1, "node1", 29500)
    assert launched({**srun, "SLURM_NTASKS": "1"}) is None  # one task: a plain run, as in an salloc shell


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "0", "WORLD_SIZE": "2"}, "LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"),
        ({k: v for k, v in FULL.items() if k != "MASTER_PORT"}, "but MASTER_PORT missing"),
        ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}, "scontrol show"),
        ({**FULL, "RANK": "2"}, "inconsistent: RANK=2, WORLD_SIZE=2"),
        ({**FULL, "WORLD_SIZE": "two"}, "must be integers"),
    ],
)
def test_an_incomplete_or_inconsistent_launcher_environment_is_one_line(env, message):
    with pytest.raises(VaelabError, match=message):
        launched(env)


def test_the_cli_names_the_missing_variable_and_refuses_devices_that_disagree(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    monkeypatch.setenv("RANK", "0")
    err = fails_with(capsys, "MASTER_ADDR", "train", "vae", "--out", str(run))
    assert "WORLD_SIZE" in err and "incomplete" in err
    for key, value in FULL.items():
        monkeypatch.setenv(key, value)
    fails_with(capsys, "--devices 3 disagrees with the launcher's WORLD_SIZE=2", "train", "vae", "--devices", "3",
               "--out", str(run))  # fmt: skip
    fails_with(capsys, "--devices 1 disagrees", "train", "vae", "--devices", "1", "--out", str(run))
    assert not run.exists()  # nothing written that a correct run would trip over


def test_a_process_that_joined_a_group_leaves_with_its_code_and_its_output_flushed(tmp_path):
    """``end_process`` skips the interpreter's teardown (where gloo's threads can abort a finished run), so it must
    still flush what was printed and logged, and exit with the code it was given."""
    script = (
        "import logging, sys\n"
        "from vaelab.training.distributed import end_process\n"
        "logging.basicConfig(filename=sys.argv[1], level=logging.INFO)\n"
        "logging.info('logged')\n"
        "print('printed', end='')\n"
        "sys.stderr.write('said')\n"
        "end_process(3)\n"
        "print('never')\n"
    )
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, env=ENV)
    assert (done.returncode, done.stdout, done.stderr) == (3, "printed", "said")
    assert "logged" in log.read_text()
