"""One contract over every registered model: a new model is tested by registering it.

For each model and each built-in data set of a kind it takes, with the model's defaults (and the data set's default
likelihood): it builds, its loss is finite with named terms, one optimizer step over its parameter groups changes
it, it survives a save_pretrained / from_pretrained round trip with identical outputs, and a generative model
samples data points of the data's shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.data import DATASETS
from vaelab.models import MODELS, DataSpec, Model, build_model
from vaelab.models.code_prior import CodePrior, CodePriorConfig
from vaelab.models.vqvae import VQModel
from vaelab.runs import make_run_config

SIZE = 1000  # the training set size a model is told (beta-tcvae's minibatch-weighted sampling needs one)


def cases() -> list[tuple[str, str]]:
    out = []
    for model in MODELS:
        for data in DATASETS:
            if data.meta.get("kind", "images") in model.obj.data_kinds and "shape" in data.meta:
                out.append((model.name, data.name))
    return out


def test_every_model_has_a_data_set_of_its_kind():
    covered = {m for m, _ in cases()}
    assert covered == set(MODELS.names())


def example_batch(model: Model, kind: str, n: int = 3) -> torch.Tensor:
    shape = model.data_shape
    if kind == "codes":
        return torch.randint(model.config.codebook_size, (n, *shape)).float()
    return torch.rand(n, *shape).bernoulli()


def attach_example_prior(model: Model) -> None:
    """A VQ model samples through a code prior over its grids (what ``vaelab train-prior`` fits)."""
    if isinstance(model, VQModel):
        grids = tuple(s for shape in model.code_shapes() for s in shape)
        config = CodePriorConfig(codebook_size=model.config.codebook_size, grids=grids, channels=4, layers=1)
        model.attach_prior(CodePrior(config, (sum(h * w for h, w in model.code_shapes()),)))


@pytest.mark.parametrize(("name", "data"), cases())
def test_model_contract(name, data, tmp_path):
    torch.manual_seed(0)
    entry = DATASETS.entry(data)
    config = make_run_config(name, data, {}).model_config  # the defaults, with the data set's default likelihood
    model = build_model(name, DataSpec(entry.meta["shape"], SIZE), config)
    x = example_batch(model, entry.meta["kind"])

    loss = model.loss(x, step=0)
    assert loss.terms and torch.isfinite(loss.total)
    assert all(torch.isfinite(v).all() for v in loss.terms.values()), loss.terms

    groups = model.param_groups(1e-3)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len([p for p in model.parameters() if p.requires_grad])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    optimizer.zero_grad()
    model.loss(x, step=1).total.backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    model.eval()
    model.save_pretrained(tmp_path / "saved")
    loaded = vaelab.from_pretrained(tmp_path / "saved")
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.data == model.data
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    torch.manual_seed(1)
    a = model.loss(x).total
    torch.manual_seed(1)
    b = loaded.loss(x).total
    assert torch.equal(a, b)

    if model.generative:
        attach_example_prior(model)
        torch.manual_seed(2)
        assert model.sample(2).shape == (2, *model.data_shape)


@pytest.mark.parametrize("name", MODELS.names())
def test_configs_are_frozen(name):
    config = MODELS.get(name).Config()
    field = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))


def test_a_model_refuses_data_of_another_kind(tmp_path):
    with pytest.raises(VaelabError, match="tdvae models sequences, but digits holds images; choose a data set of"):
        vaelab.train("tdvae", "digits", tmp_path / "t", epochs=1)
    with pytest.raises(VaelabError, match="vqvae models images, but oscillator holds sequences"):
        vaelab.train("vqvae", "oscillator", tmp_path / "v", epochs=1)
    assert not (tmp_path / "t").exists() and not (tmp_path / "v").exists()
