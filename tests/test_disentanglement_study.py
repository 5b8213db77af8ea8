"""The disentanglement study driver (benchmarks/disentanglement_study.py): its spec checks, and its aggregation."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab.core.errors import VaelabError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "disentanglement_study.py"
spec = importlib.util.spec_from_file_location("disentanglement_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = study  # dataclasses look their module up
spec.loader.exec_module(study)


def write(tmp_path: Path, content: dict) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(content))
    return path


def test_shipped_specs_expand_into_their_cells():
    _, cells = study.read_spec(SCRIPT.parent / "studies" / "dsprites-small.json")
    labels = [c.label for c in cells]
    assert labels[:5] == [f"β-VAE β={b}" for b in (1, 2, 4, 8, 16)] and len(cells) == 8
    assert [c.options["beta"] for c in cells[:5]] == [1, 2, 4, 8, 16]
    assert cells[0].folder == "beta-VAE-beta=1"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"groups": [{"preset": "nope"}]}, "unknown preset 'nope'"),
        ({"groups": [{"preset": "betavae-dsprites-small-b4", "model": "nope"}]}, "unknown model 'nope'"),
        ({"groups": [{"preset": "betavae-dsprites-small-b4", "model": "factor-vae"}]}, "trains 'beta-vae'"),
        ({"groups": [{"preset": "betavae-dsprites-small-b4", "options": {"betaa": 2}}]}, "unknown config key 'betaa'"),
        ({"groups": [{"preset": "betavae-dsprites-small-b4"}], "seed": [1]}, "unknown key 'seed'"),
        ({"groups": []}, "non-empty list of groups"),
    ],
)
def test_bad_specs_are_refused(tmp_path, content, message):
    with pytest.raises(VaelabError, match=message):
        study.read_spec(write(tmp_path, content))


def test_a_bad_spec_is_one_line_and_nothing_is_written(tmp_path):
    path = write(tmp_path, {"groups": [{"preset": "nope"}]})
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown preset 'nope'" in done.stderr
    assert not out.exists()


def test_report_ranks_and_figures(tmp_path):
    _, cells = study.read_spec(SCRIPT.parent / "studies" / "dsprites-small-tiny.json")
    rows = []
    for i, cell in enumerate(cells[:2]):
        for seed in (0, 1):
            value = 0.1 * (2 * i + seed + 1)  # every metric ranks the four runs alike
            scores = {key: value for _, key in study.SCORES}
            rows.append(dict(cell=cell.label, seed=seed, val_elbo=-1.0, train_s=1, metrics_s=1, scores=scores))
    text = study.report(rows, cells)
    assert "| β-VAE β=1 | 2 | 15.0% ± 7.1% |" in text  # mean ± sd (ddof 1) of 10% and 20%
    assert "| MIG | 1.00 | 1.00 | 1.00 |" in text  # identical rankings: Spearman 1
    paths = study.figures(rows, cells, tmp_path / "figures")
    assert len(paths) == len(study.SCORES) and all(p.stat().st_size > 1000 for p in paths)


def test_processes_sharing_an_out_folder_take_each_cell_once(tmp_path):
    """A cell held by another process (its claim file locked) is skipped at once, then waited for; a free one is
    taken. Another open file description stands in for the other process (flock locks belong to them)."""
    claim = tmp_path / "cell" / "seed-0.claim"
    with study.held(claim, wait=False) as mine:
        assert mine
        with study.held(claim, wait=False) as theirs:
            assert not theirs
    with study.held(claim, wait=False) as again:  # released when the block ended
        assert again


def test_a_kept_score_is_used_again_only_for_the_same_settings_and_a_run_of_other_options_is_refused(
    tmp_path, monkeypatch
):
    """A score.json is reused when the cell's options, budget and metric settings are those it was taken with; a
    changed option under the same --out is neither answered from the old score nor trained over the old run."""
    spec, cells = study.read_spec(SCRIPT.parent / "studies" / "dsprites-small-tiny.json")
    cell = cells[1]  # β-VAE β=4
    run_dir = tmp_path / cell.folder / "seed-0"
    run_dir.mkdir(parents=True)
    kept = {"cell": cell.label, "seed": 0, **study._settings(cell, spec), "scores": {"mig": 0.5}}
    (run_dir / "score.json").write_text(json.dumps(kept))
    trained = []
    monkeypatch.setattr(study, "train", lambda *a, **k: trained.append(a))
    assert study.run_cell(cell, 0, spec, tmp_path)["scores"] == {"mig": 0.5} and not trained

    changed = study.Cell(cell.label, cell.preset, cell.model, cell.data, {**cell.options, "beta": 8})
    old_run = study.make_run_config(cell.model, cell.data, {**cell.options, "seed": 0, "epochs": 1})

    class Run:
        config = old_run

    monkeypatch.setattr(study, "has_run", lambda path: True)
    monkeypatch.setattr(study, "load", lambda path: Run())
    with pytest.raises(VaelabError, match=r"trained with other settings .*\(model_config\.beta\): use another --out"):
        study.run_cell(changed, 0, spec, tmp_path)
    assert not trained
    for key, other in [("metric_seed", 1), ("quick", True), ("sizes", None)]:  # the protocol is part of the key
        assert study._settings(cell, {**spec, key: other}) != study._settings(cell, spec)


def test_the_report_leaves_out_scores_of_cells_or_settings_the_spec_no_longer_has():
    spec, cells = study.read_spec(SCRIPT.parent / "studies" / "dsprites-small-tiny.json")
    row = {"cell": cells[0].label, "seed": 0, **study._settings(cells[0], spec)}
    stale = {**row, "options": {**row["options"], "beta": 2}}
    gone = {**row, "cell": "a cell no longer in the spec"}
    other_seed = {**row, "seed": 7}
    assert study.current([row, stale, gone, other_seed], cells, spec) == [row]
