"""A run's reports: one file per setting that produced it, each stamped with the weights it was computed from.

    RUN/eval.json                 vaelab eval at its defaults (the test split; K = 1000 where the model has a bound)
    RUN/eval-SETTINGS.json        any other split or K: eval-val-k1000.json, eval-test-k50.json (eval-val.json
                                  for a model without a likelihood bound)
    RUN/probe.json                vaelab probe at its defaults; probe-SETTINGS.json otherwise (probe-n1000-C0.1)
    RUN/prediction.json           vaelab predict at its defaults; prediction-SETTINGS.json otherwise (prediction-h3)
    RUN/disentanglement-SETTINGS.json   vaelab disentanglement: disentanglement-quick-seed0.json,
                                  disentanglement-full-seed3-mig+sap.json
    RUN/gaps.json                 vaelab gaps at its defaults; gaps-SETTINGS.json otherwise (gaps-val-k50-n200)

Every report holds ``weights_id`` (the id of RUN/model/'s weights it was computed from), ``written`` (UTC, ISO 8601)
and ``command`` (the vaelab command that writes it again). A run trained on since (``train --resume``) has new
weights: ``stale_reports`` lists the reports, and a VQ run's prior/, computed from earlier ones, each with the
command that refreshes it. Nothing is overwritten but a report of the very same settings.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import weights_id
from vaelab.runs.folder import CONFIG, MODEL_DIR, read_config, write_json

#: the kinds of report, the first part of their file names
REPORT_KINDS = ("eval", "probe", "prediction", "disentanglement", "gaps")
PRIOR_DIR = "prior"


def report_name(kind: str, *settings: str) -> str:
    """KIND.json at the defaults (no settings), else KIND-SETTING-SETTING.json (empty settings left out)."""
    if kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    return "-".join([kind, *(s for s in settings if s)]) + ".json"


def stamp(run_dir: str | os.PathLike, result: dict[str, Any], command: str) -> dict[str, Any]:
    """``result`` with ``weights_id`` (of RUN/model/), ``written`` (now, UTC) and ``command`` added."""
    return {
        **result,
        "weights_id": weights_id(Path(run_dir) / MODEL_DIR),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
    }


def write_stamped(run_dir: str | os.PathLike, name: str, result: dict[str, Any], command: str) -> dict[str, Any]:
    """Write RUN/name atomically with its stamp (``stamp``); returns what was written."""
    report = stamp(run_dir, result, command)
    write_json(Path(run_dir) / name, report)
    return report


def report_files(run_dir: str | os.PathLike) -> list[Path]:
    """The report files in a run folder (KIND.json and KIND-*.json of every kind), sorted by name."""
    folder = Path(run_dir)
    found = {p for kind in REPORT_KINDS for pattern in (f"{kind}.json", f"{kind}-*.json") for p in folder.glob(pattern)}
    return sorted(p for p in found if p.is_file())


@dataclass(frozen=True)
class Stale:
    """A report (or a VQ run's prior/) computed from weights the run no longer has, and how to refresh it."""

    path: Path
    why: str
    command: str


def stale_reports(run_dir: str | os.PathLike) -> list[Stale]:
    """The reports of a run, and its code prior, that were computed from other weights than RUN/model/'s now."""
    folder = Path(run_dir)
    current = weights_id(folder / MODEL_DIR)
    stale = []
    for path in report_files(folder):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            report = None
        if not isinstance(report, dict):
            stale.append(Stale(path, "it cannot be read", _default_command(path, folder)))
            continue
        if report.get("weights_id") != current:
            why = "it was computed from earlier weights" if report.get("weights_id") else "it names no weights"
            stale.append(Stale(path, why, report.get("command") or _default_command(path, folder)))
    prior = folder / PRIOR_DIR
    if (prior / CONFIG).is_file():
        try:
            fitted_to = read_config(prior).data.fingerprint
        except VaelabError:
            fitted_to = None
        if fitted_to != current:
            stale.append(Stale(prior, "it was fitted to the codes of earlier weights", f"vaelab train-prior {folder}"))
    return stale


def _default_command(path: Path, run_dir: Path) -> str:
    kind = path.stem.split("-")[0]
    return f"vaelab {'predict' if kind == 'prediction' else kind} {run_dir}"
