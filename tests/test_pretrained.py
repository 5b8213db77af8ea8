"""One persistence format: save_pretrained / from_pretrained for any model (without a training run), the run folder
built from it, and the refusals: a folder that is not a saved module, another model's weights, damaged files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import vaelab
from vaelab.core.errors import VaelabError
from vaelab.models import DataSpec, build_model


def test_a_model_saved_without_a_run_loads_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("vae", DataSpec((1, 8, 8), 500), latent_dim=3, hidden=(16,), prior="mog", prior_components=5)
    folder = model.save_pretrained(tmp_path / "vae")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    spec = json.loads((folder / "config.json").read_text())
    assert (
        spec["name"] == "vae" and spec["config"]["prior"] == "mog" and spec["data"] == {"shape": [1, 8, 8], "size": 500}
    )
    loaded = vaelab.from_pretrained(folder)
    assert not loaded.training and loaded.config == model.config
    x = torch.rand(4, 1, 8, 8).bernoulli()
    model.eval()
    torch.testing.assert_close(loaded.encode(x).mean, model.encode(x).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.prior().log_prob(torch.zeros(3)), model.prior().log_prob(torch.zeros(3)))


def test_a_run_folder_is_built_from_a_saved_module(vae_run):
    assert (vae_run.path / "model" / "config.json").is_file()
    from_run = vaelab.from_pretrained(vae_run.path)  # the run folder itself: its kept weights
    for k, v in vae_run.model.state_dict().items():
        assert torch.equal(from_run.state_dict()[k], v)


def test_refusals(tmp_path):
    with pytest.raises(VaelabError, match="does not exist"):
        vaelab.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaelabError, match="is not a saved vaelab module: it has no config\\.json"):
        vaelab.from_pretrained(tmp_path / "empty")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(VaelabError, match="does not describe a saved vaelab module"):
        vaelab.from_pretrained(tmp_path / "foreign")
    (tmp_path / "foreign" / "config.json").write_text("{not json")
    with pytest.raises(VaelabError, match="is not valid JSON"):
        vaelab.from_pretrained(tmp_path / "foreign")

    ae = build_model("ae", (1, 8, 8), latent_dim=3, hidden=(16,)).save_pretrained(tmp_path / "ae")
    vae = build_model("vae", (1, 8, 8), latent_dim=3, hidden=(16,)).save_pretrained(tmp_path / "vae")
    mixed = tmp_path / "mixed"
    shutil.copytree(ae, mixed)
    shutil.copy(vae / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(VaelabError, match=r"holds the weights of a 'vae' model, but config\.json says 'ae'"):
        vaelab.from_pretrained(mixed)

    resized = tmp_path / "resized"
    shutil.copytree(vae, resized)
    spec = json.loads((resized / "config.json").read_text())
    spec["config"]["latent_dim"] = 4
    (resized / "config.json").write_text(json.dumps(spec))
    with pytest.raises(VaelabError, match="do not fit the model described in its config\\.json"):
        vaelab.from_pretrained(resized)

    (vae / "model.safetensors").write_bytes((vae / "model.safetensors").read_bytes()[:-50])
    with pytest.raises(VaelabError, match="truncated or corrupt"):
        vaelab.from_pretrained(vae)

    bare = tmp_path / "bare"
    shutil.copytree(ae, bare)
    save_file(load_file(str(ae / "model.safetensors")), str(bare / "model.safetensors"))  # no vaelab metadata
    with pytest.raises(VaelabError, match="is not a vaelab weights file"):
        vaelab.from_pretrained(bare)
