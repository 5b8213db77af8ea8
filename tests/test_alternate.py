"""train.alternate=K: K decoder steps with the encoder fixed, then K encoder steps with the decoder fixed (any VAE);
the phase follows from the step count, so a resumed run is the run that was not interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.runs import make_run_config
from vaelab.training.trainer import Trainer, train

OPTIONS = {"latent_dim": 3, "hidden": (16,), "seed": 3}


def checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("model", "extra"), [("vae", {}), ("linear-gaussian", {"fit": "sgvb", "posterior": "full"})])
def test_each_phase_moves_only_its_own_parameters(tmp_path, model, extra):
    k = 3
    config = make_run_config(model, "digits", {**OPTIONS, **extra, "alternate": k, "lr": 1e-2})
    trainer = Trainer(config, tmp_path / "run", torch.device("cpu"))
    encoder, decoder = (set(map(id, group)) for group in trainer.model.alternation_groups())
    assert encoder and decoder and not encoder & decoder
    assert encoder | decoder == {id(p) for p in trainer.model.parameters()}
    named = dict(trainer.model.named_parameters())
    x = trainer.data.train[:50]
    for step in range(4 * k):
        before = {n: p.detach().clone() for n, p in named.items()}
        trainer._step(x)
        trainer.step += 1
        moved = {n for n, p in named.items() if not torch.equal(before[n], p)}
        frozen, trained = (encoder, decoder) if (step // k) % 2 == 0 else (decoder, encoder)
        assert not {n for n in moved if id(named[n]) in frozen}, (step, moved)
        assert {n for n in moved if id(named[n]) in trained}, step


def test_an_alternating_run_resumed_equals_one_not_interrupted(tmp_path):
    opts = {**OPTIONS, "alternate": 5, "epochs": 1}  # 14 steps an epoch: the resume starts inside a phase
    short = vaelab.train("vae", "digits", tmp_path / "short", **opts)
    straight = vaelab.train("vae", "digits", tmp_path / "straight", **{**opts, "epochs": 3})
    train(None, short.path, resume=True, epochs=3)
    a, b = checkpoint_weights(short.path), checkpoint_weights(straight.path)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    joint = vaelab.train("vae", "digits", tmp_path / "joint", **{**opts, "alternate": 0, "epochs": 3})
    c = checkpoint_weights(joint.path)
    assert any(not torch.equal(a[n], c[n]) for n in a)  # alternating is not the joint update


def test_bad_alternate_is_refused(tmp_path):
    with pytest.raises(VaelabError, match="alternate must be >= 0"):
        make_run_config("vae", "digits", {"alternate": -1})
    with pytest.raises(VaelabError, match="AutoEncoder has no encoder and decoder to alternate"):
        vaelab.train("ae", "digits", tmp_path / "ae", alternate=2, epochs=1)
    assert not (tmp_path / "ae").exists()
