"""Shared fixtures: small runs on the embedded digits data, trained once per session."""

from __future__ import annotations

import os

import pytest
import torch

import vaelab

# the CLI's default thread policy honours OMP_NUM_THREADS: the commands the tests run in-process stay on one thread
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are small: one intra-op thread is as fast, and it does not stall (tens of seconds)
    when another process holds one of the CPU cores and two OpenMP threads spin-wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
    """A VAE trained on digits for a few seconds (enough for bounds and figures to be meaningful)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    return vaelab.train("vae", "digits", out, epochs=40, latent_dim=4, hidden=(128,), seed=0)
