"""Sweeps: a 4-point sweep of tiny runs on the local engine (and on a local Ray instance when Ray is installed),
aggregated into one table; a killed sweep resumes without redoing finished runs; a failed run is recorded and the
others go on; every bad spec, engine or address is one line."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import fails_with, run_cli
from vaelab.core.errors import VaelabError
from vaelab.sweeps import parse_spec, read_spec, read_status, run_sweep
from vaelab.sweeps.aggregate import aggregate
from vaelab.sweeps.engines import check_reachable, slots
from vaelab.training.distributed import free_port

VAELAB = [sys.executable, "-m", "vaelab.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPEC = {
    "model": "vae",
    "data": "digits",
    "options": {"epochs": 1, "hidden": [16], "batch_size": 200},
    "grid": {"latent_dim": [2, 3]},
    "seeds": [0, 1],
    "eval": {"eval": {"iw_samples": 8}},
}
NAMES = ["vae-latent_dim=2-seed0", "vae-latent_dim=2-seed1", "vae-latent_dim=3-seed0", "vae-latent_dim=3-seed1"]


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec))
    return path


def eval_numbers(sweep: Path) -> dict[str, dict]:
    return {name: json.loads((sweep / name / "eval-test-k8.json").read_text()) for name in NAMES}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The 4-point sweep on the local engine, killed (SIGKILL to it and its workers) once its first run is done, then
    run again: (the sweep folder, the runs done before the kill, their checkpoints' times, the rerun's status)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    spec, sweep = write_spec(tmp_path / "spec.json", SPEC), tmp_path / "sweep"
    proc = subprocess.Popen(
        [*VAELAB, "sweep", str(spec), "--out", str(sweep), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:  # kill the whole sweep (its workers too) once the first run is done
        assert proc.poll() is None, proc.communicate()[1]
        status = json.loads((sweep / "sweep.json").read_text()) if (sweep / "sweep.json").is_file() else None
        if status and any(r["status"] == "done" for r in status["runs"].values()):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [n for n, r in read_status(sweep)["runs"].items() if r["status"] == "done"]
    stamps = {n: (sweep / n / "checkpoint.pt").stat().st_mtime_ns for n in first}
    return sweep, first, stamps, run_sweep(spec, sweep, workers=2)


def test_a_killed_sweep_resumes_without_redoing_finished_runs(resumed):
    sweep, first, stamps, status = resumed
    assert first and len(first) < 4
    runs = status["runs"]
    assert list(runs) == NAMES and all(r["status"] == "done" for r in runs.values())
    for n in first:
        assert (sweep / n / "checkpoint.pt").stat().st_mtime_ns == stamps[n]  # not trained again
    # the others were trained, resumed, or kept: a run the kill caught after its training finished but before the
    # sweep recorded it is finished, so it is reported again, not trained again
    assert {runs[n]["action"] for n in NAMES if n not in first} <= {"trained", "resumed", "kept"}
    for n in NAMES:  # every point is an ordinary run folder
        assert {"config.json", "checkpoint.pt", "model", "metrics.jsonl", "eval-test-k8.json", "figures"} <= {
            p.name for p in (sweep / n).iterdir()
        }
        config = json.loads((sweep / n / "config.json").read_text())
        assert config["model_config"]["latent_dim"] == int(n.split("=")[1][0])
    again = run_sweep(sweep.parent / "spec.json", sweep, workers=2)  # nothing left to do: every run kept as it was
    assert again["runs"] == runs


def test_the_sweep_aggregates_into_one_table(resumed, tmp_path, capsys):
    sweep = resumed[0]
    code, out, _ = run_cli(capsys, "aggregate", str(sweep), "--csv", str(tmp_path / "table.csv"))
    assert code == 0 and "eval/nll" in out and "±" in out
    rows = {(r["latent_dim"], r["metric"]): r for r in csv.DictReader(open(tmp_path / "table.csv"))}
    evals = eval_numbers(sweep)
    for dim in ("2", "3"):  # the table against the runs' own reports (eval-test-k8.json: K = 8), averaged here
        values = [evals[f"vae-latent_dim={dim}-seed{s}"]["nll"] for s in (0, 1)]
        row = rows[(dim, "eval/nll")]
        assert row["n"] == "2" and [float(row["seed_0"]), float(row["seed_1"])] == values
        assert float(row["mean"]) == pytest.approx(statistics.mean(values))
        assert float(row["sd"]) == pytest.approx(statistics.stdev(values))
    assert (sweep / "figures" / "eval_nll.png").is_file()


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, capsys):
    spec = {
        "model": "ae",
        "options": {"epochs": 1, "hidden": [8], "latent_dim": 2},
        "grid": {"val_fraction": [0.1, 0]},
        "eval": {"eval": {"split": "val"}},
    }  # the run without a validation split cannot be evaluated on it
    sweep = tmp_path / "sweep"
    err = fails_with(capsys, "1 runs did not finish", "sweep", str(write_spec(tmp_path / "s.json", spec)), "--out",
                     str(sweep), "--workers", "2")  # fmt: skip
    runs = read_status(sweep)["runs"]
    assert runs["ae-val_fraction=0.1-seed0"]["status"] == "done"
    bad = runs["ae-val_fraction=0-seed0"]
    assert bad["status"] == "failed" and "val split" in bad["error"] and "empty" in bad["error"], bad
    assert "val split" in err  # shown as it happened, one line
    table = aggregate(sweep)
    assert "ae-val_fraction=0-seed0" in table.missing and {r.values["val_fraction"] for r in table.rows} == {0.1}


def test_the_ray_engine_gives_the_local_engines_runs(resumed, tmp_path):
    pytest.importorskip("ray")
    local, ray = resumed[0], tmp_path / "ray"
    try:
        status = run_sweep(parse_spec({**SPEC, "resources": {"cpus": 1}}), ray, engine="ray", workers=2)
    except VaelabError as e:  # Ray waits 30 s (fixed) for its node to register; a machine under heavy load misses it
        if "timed out during startup" not in str(e):
            raise
        pytest.skip(f"the local Ray instance did not start on this loaded machine: {e}")
    assert all(r["status"] == "done" for r in status["runs"].values())
    mine, theirs = eval_numbers(local), eval_numbers(ray)
    for name in NAMES:  # the same seed and thread count: the same weights, so the same numbers
        for key in ("nll", "elbo", "kl"):
            assert theirs[name][key] == pytest.approx(mine[name][key], rel=1e-4), (name, key)
    assert [r.metric for r in aggregate(ray).rows] == [r.metric for r in aggregate(local).rows]


# bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epoch": 3}, "unknown key 'epoch' in the sweep spec; valid keys: model, preset, data"),
        ({"model": "vea"}, "unknown model 'vea'"),
        ({"model": None, "preset": "nope"}, "unknown preset 'nope'; choose from:"),
        ({"grid": {}}, "the grid of the sweep spec is empty"),
        ({"grid": {"latent_dim": []}}, "grid key 'latent_dim' of the sweep spec needs a non-empty list"),
        ({"eval": ["eval", "gap"]}, "unknown report kind 'gap' in the sweep spec; choose from: disentanglement,"),
        ({"eval": {"eval": {"k": 5}}}, "unknown option 'k'; choose from: split, iw_samples"),
        ({"grid": {"latnt_dim": [2]}}, "point vae-latnt_dim=2-seed0: unknown config key 'latnt_dim'"),
        ({"seeds": []}, "'seeds' of the sweep spec must be a non-empty list of integers"),
        ({"options": {"seed": 3}}, "list the seeds under 'seeds'"),
        ({"preset": "vae-digits"}, "names both a model and a preset"),
        ({"model": None}, "names no model"),
        ({"resources": {"memory": 4}}, "unknown resource 'memory'"),
    ],
)
def test_a_bad_spec_is_one_line(change, message):
    spec = {k: v for k, v in {**SPEC, **change}.items() if v is not None}
    with pytest.raises(VaelabError, match=re.escape(message)):
        parse_spec(spec)


def test_points_get_deterministic_names_and_presets_can_be_crossed():
    assert [p.name for p in parse_spec(SPEC).points] == NAMES
    crossed = parse_spec({"grid": {"preset": ["vae-digits", "vae-mnist"], "beta": [0.5]}, "options": {"epochs": 1}})
    assert [p.name for p in crossed.points] == ["vae-digits-beta=0.5-seed0", "vae-mnist-beta=0.5-seed0"]
    assert [p.data for p in crossed.points] == ["digits", "mnist"] and crossed.points[0].config().train.epochs == 1


def test_the_cli_refuses_bad_specs_engines_and_folders_in_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.json").write_text("{not json")
    fails_with(capsys, "is not valid JSON", "sweep", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o"))
    fails_with(capsys, "does not exist", "sweep", str(tmp_path / "none.json"), "--out", str(tmp_path / "o"))
    spec = write_spec(tmp_path / "s.json", SPEC)
    fails_with(capsys, "--workers must be >= 1", "sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "0")
    fails_with(capsys, "holds no sweep", "aggregate", str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    fails_with(capsys, "pip install 'vaelab[ray]'", "sweep", str(spec), "--out", str(tmp_path / "o"), "--engine", "ray")
    port = str(free_port())  # nothing listens there
    fails_with(capsys, f"cannot reach the Ray cluster at 127.0.0.1:{port} within 10 s", "sweep", str(spec), "--out",
               str(tmp_path / "o"), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}")  # fmt: skip
    fails_with(capsys, "a Ray address is for the ray engine", "sweep", str(spec), "--out", str(tmp_path / "o"),
               "--ray-address", f"127.0.0.1:{port}")  # fmt: skip
    assert not any((tmp_path / "o").glob("vae-*"))  # nothing trained


def test_an_unreachable_ray_address_is_refused_after_a_time_out(monkeypatch):
    port = free_port()  # nothing listens there
    with pytest.raises(VaelabError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port} within"):
        check_reachable(f"127.0.0.1:{port}")
    asked = []

    def black_hole(address, timeout):  # a host that never answers: the connection times out
        asked.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", black_hole)
    with pytest.raises(VaelabError, match=r"at ray://head:10001 within 0\.5 s \(TimeoutError\)"):
        check_reachable("ray://head:10001", timeout=0.5)
    assert asked == [0.5]
    with pytest.raises(VaelabError, match="is not HOST:PORT"):
        check_reachable("nowhere")


def test_a_yaml_spec_reads_as_its_json_and_without_pyyaml_says_how_to_install_it(tmp_path, monkeypatch):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert read_spec(path).points == parse_spec(SPEC).points
    (tmp_path / "bad.yaml").write_text("model: [vae\n")
    with pytest.raises(VaelabError, match="is not valid YAML"):
        read_spec(tmp_path / "bad.yaml")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(VaelabError, match="reading YAML needs PyYAML: pip install pyyaml"):
        read_spec(path)


def test_local_workers_share_the_thread_policy(monkeypatch):
    """Each local worker gets its share of the thread policy's CPUs: OMP_NUM_THREADS=1 means one thread each (the
    cores' share would oversubscribe a machine the user already limited)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert [threads for threads, _ in slots(2)] == [1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert [threads for threads, _ in slots(2)] == [4, 4]  # OMP_NUM_THREADS is per process, as under torchrun
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert [threads for threads, _ in slots(2)] == [max(1, cores // 2)] * 2
