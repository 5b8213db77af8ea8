"""The reports a sweep makes of every run, by kind: each calls the command's own API function (``vaelab eval``,
``vaelab disentanglement``, ``vaelab predict``, ``vaelab probe``, ``vaelab gaps``), knows whether a run already has
it, and reads its numbers back for ``vaelab aggregate``. ``train`` (the last training and validation rows of
metrics.jsonl) is always read; a new kind is one ``REPORTS.register``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.core.errors import VaelabError
from vaelab.core.pretrained import weights_id
from vaelab.core.registry import Registry
from vaelab.eval.disentanglement import disentanglement_report_name, run_disentanglement
from vaelab.eval.evaluate import DEFAULT_IW_SAMPLES, eval_report_name, evaluate_run, write_eval
from vaelab.eval.features import probe, probe_settings
from vaelab.eval.gaps import gaps_report_name, run_gaps
from vaelab.eval.sequences import SETTING_PREFIX, predict
from vaelab.runs import MODEL_DIR, Run, read_metrics, report_name


@dataclass(frozen=True)
class Report:
    """``make(run, options, device)`` writes the report; ``names(options)`` the file names the report of these options
    may have in a run folder (``vaelab.runs.reports``: each setting has its own file), the first the usual one;
    ``numbers(report)`` its numbers, flat (``{"nll": 91.2, "mig": 0.31}``); ``options`` the accepted options."""

    make: Callable[[Run, dict[str, Any], str], Any]
    names: Callable[[dict[str, Any]], list[str]]
    numbers: Callable[[dict[str, Any]], dict[str, float]]
    options: tuple[str, ...] = ()

    def check(self, options: dict[str, Any], where: str) -> None:
        """Refuse options this report does not take, naming those it does."""
        if not isinstance(options, dict):
            raise VaelabError(f"{where}: options must be an object, got {options!r}")
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise VaelabError(
                f"{where}: unknown option {unknown[0]!r}; choose from: {', '.join(self.options) or '(none)'}"
            )

    def path(self, run_dir: Path, options: dict[str, Any] | None = None) -> Path | None:
        """The run's report of these options, computed from its present weights; None when it has none."""
        current = weights_id(Path(run_dir) / MODEL_DIR)
        for name in self.names(options or {}):
            report = _json(Path(run_dir) / name)
            if report and report.get("weights_id") == current:
                return Path(run_dir) / name
        return None

    def done(self, run_dir: Path, options: dict[str, Any] | None = None) -> bool:
        """Whether the run has this report, computed from its present weights."""
        return self.path(run_dir, options) is not None

    def read(self, run_dir: Path, options: dict[str, Any] | None = None) -> dict[str, float]:
        """The numbers of the run's report of these options (empty when it has none)."""
        path = self.path(run_dir, options)
        return {} if path is None else self.numbers(_json(path))


REPORTS: Registry[Report] = Registry("report kind")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a report, nested keys joined by '/' (lists and booleans left out)."""
    out: dict[str, float] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


SKIP = ("num_examples", "iw_samples", "iwae_samples_per_s", "latent_dim", "seed", "step", "epoch")


def _eval_names(o: dict[str, Any]) -> list[str]:
    split, k = o.get("split", "test"), o.get("iw_samples") or DEFAULT_IW_SAMPLES
    return [eval_report_name({"split": split, "iw_samples": k}), eval_report_name({"split": split})]  # no bound


def _make_eval(run: Run, options: dict[str, Any], device: str) -> None:
    write_eval(run, evaluate_run(run, options.get("split", "test"), options.get("iw_samples"), device))


REPORTS.register("eval", "vaelab eval: the test ELBO, the IWAE bound, active units, the model's own numbers")(
    Report(
        make=_make_eval,
        names=_eval_names,
        numbers=lambda r: {f"eval/{k}": v for k, v in numbers({k: v for k, v in r.items() if k not in SKIP}).items()},
        options=("split", "iw_samples"),
    )
)


def _make_disentanglement(run: Run, options: dict[str, Any], device: str) -> None:
    run_disentanglement(
        run,
        options.get("seed", 0),
        options.get("metrics"),
        options.get("factors"),
        device,
        None,
        options.get("quick", False),
    )


REPORTS.register("disentanglement", "vaelab disentanglement: BetaVAE, FactorVAE, MIG, DCI, SAP scores")(
    Report(
        make=_make_disentanglement,
        names=lambda o: [
            disentanglement_report_name(o.get("seed", 0), o.get("quick", False), o.get("metrics"), o.get("factors"))
        ],
        numbers=lambda r: numbers(r.get("scores", {})),
        options=("seed", "metrics", "factors", "quick"),
    )
)


def _prediction_numbers(report: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, scores in report.get("results", {}).items():
        for key, values in scores.items():
            if isinstance(values, list):
                out.update({f"predict/{name}/{key}@{h}": float(v) for h, v in zip(report["horizons"], values)})
            elif isinstance(values, (int, float)):
                out[f"predict/{name}/{key}"] = float(values)
    return out


def _prediction_names(o: dict[str, Any]) -> list[str]:
    """prediction.json at the model's defaults; settings given: the keyed name (defaults depend on the model, so the
    names of every subset of the given settings are tried)."""
    given = [
        f"{prefix}{o[k]}" if k != "split" or o[k] != "test" else "" for k, prefix in SETTING_PREFIX.items() if k in o
    ]
    names = [report_name("prediction", *given)]
    for drop in range(len(given)):
        names.append(report_name("prediction", *(g for i, g in enumerate(given) if i != drop)))
    return [*dict.fromkeys([*names, report_name("prediction")])]


REPORTS.register("predict", "vaelab predict: a sequence model's jumpy prediction error by horizon")(
    Report(
        make=lambda run, o, device: predict(
            run, None, o.get("horizon"), o.get("context"), o.get("samples", 16), o.get("split", "test"), device
        ),
        names=_prediction_names,
        numbers=_prediction_numbers,
        options=("horizon", "context", "samples", "split"),
    )
)

REPORTS.register("probe", "vaelab probe: a linear probe's test error on the run's codes")(
    Report(
        make=lambda run, o, device: probe(
            run, o.get("max_train"), o.get("C"), o.get("max_iter", 1000), o.get("baseline", False), device
        ),
        names=lambda o: [
            report_name(
                "probe",
                *probe_settings(o.get("max_train"), o.get("C"), o.get("max_iter", 1000), o.get("baseline", False)),
            )
        ],
        numbers=lambda r: {f"probe/{k}": v for k, v in numbers(r).items() if "iterations" not in k},
        options=("max_train", "C", "max_iter", "baseline"),
    )
)


GAPS_OPTIONS = ("large_k", "steps", "lr", "samples", "use_exact")
GAPS_SETTINGS = ("k", "points", *GAPS_OPTIONS)  # echoed in gaps.json: settings, not results

REPORTS.register("gaps", "vaelab gaps: log p(x), ELBO, IWAE_K and the inference gap (approximation, amortization)")(
    Report(
        make=lambda run, o, device: run_gaps(
            run,
            o.get("k", 100),
            o.get("points", 100),
            o.get("split", "test"),
            device,
            None,
            **{k: o[k] for k in GAPS_OPTIONS if k in o},
        ),
        names=lambda o: [
            gaps_report_name(
                o.get("k", 100),
                o.get("points", 100),
                o.get("split", "test"),
                **{k: o[k] for k in GAPS_OPTIONS if k in o},
            )
        ],
        numbers=lambda r: {f"gaps/{k}": v for k, v in numbers(r).items() if k not in GAPS_SETTINGS},
        options=("k", "points", "split", *GAPS_OPTIONS),
    )
)


def training_numbers(run_dir: Path) -> dict[str, float]:
    """The last training and validation rows of metrics.jsonl, as ``train/KEY`` and ``val/KEY``."""
    last: dict[str, dict[str, Any]] = {}
    for row in read_metrics(run_dir):
        if row.get("split") in ("train", "val"):
            last[row["split"]] = row
    skip = {"step", "epoch", "samples_per_s", "lr"}
    return {f"{split}/{k}": v for split, row in last.items() for k, v in numbers(row).items() if k not in skip}
