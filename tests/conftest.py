"""Shared fixtures: small runs on the embedded digits data, trained once per session."""

from __future__ import annotations

import pytest

import vaelab


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
    """A VAE trained on digits for a few seconds (enough for bounds and figures to be meaningful)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    return vaelab.train("vae", "digits", out, epochs=40, latent_dim=4, hidden=(128,), seed=0)
