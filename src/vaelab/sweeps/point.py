"""One point of a sweep, in whichever process an engine runs it: train its run folder (or resume it, or skip a
finished one), draw the run's figures, make the reports it lacks. Every failure comes back as a status, never as an
exception, so one bad run does not stop the others."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from vaelab.core.errors import Interrupted, VaelabError
from vaelab.core.pretrained import write_text
from vaelab.runs import CHECKPOINT, RunConfig, load, load_checkpoint
from vaelab.runs.folder import has_run
from vaelab.sweeps.reports import REPORTS
from vaelab.sweeps.spec import Point
from vaelab.training.trainer import resolve_device, train
from vaelab.viz import training_figures

ERRORS = "errors"  # SWEEP/errors/NAME.log: the traceback of a run that failed with an unexpected error


def run_point(point: Point, out: str, threads: int = 1, gpu: int | None = None) -> dict[str, Any]:
    """Train and report one point into OUT/NAME with ``threads`` CPU threads (or on GPU ``gpu``); the outcome:
    ``{"status": "done" | "failed" | "interrupted", "action": "trained" | "resumed" | "extended" | "kept", "error",
    "seconds"}``; a finished run of the same configuration with fewer epochs is trained on to this point's epochs."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # before CUDA starts in this process
    torch.set_num_threads(max(1, int(threads)))
    start = time.perf_counter()
    run_dir = Path(out) / point.name
    try:
        action = _train(point, run_dir)
        device = resolve_device(point.config().train.device)
        run = load(run_dir, device)
        device = device.type
        if action != "kept" or not (run_dir / "figures").is_dir():
            training_figures(run.path, run.model, run.dataset(device))
        for kind, options in point.reports.items():
            report = REPORTS.get(kind)
            if action != "kept" or not report.done(run_dir, options):
                torch.manual_seed(0)
                report.make(run, options, device)
        return {"status": "done", "action": action, "seconds": time.perf_counter() - start}
    except Interrupted as e:
        return {"status": "interrupted", "error": str(e), "seconds": time.perf_counter() - start}
    except KeyboardInterrupt:
        return {"status": "interrupted", "error": "interrupted (Ctrl-C)", "seconds": time.perf_counter() - start}
    except VaelabError as e:
        return {"status": "failed", "error": str(e), "seconds": time.perf_counter() - start}
    except Exception as e:  # an unexpected error: one line here, the traceback in SWEEP/errors/NAME.log
        log = Path(out) / ERRORS / f"{point.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        write_text(log, traceback.format_exc())
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        return {"status": "failed", "error": f"{message} (traceback: {log})", "seconds": time.perf_counter() - start}


def _train(point: Point, run_dir: Path) -> str:
    """Train the point's run, resume it where it stopped, or keep a finished one: "trained", "resumed" or "kept"."""
    config = point.config()
    if not has_run(run_dir):
        train(config, run_dir)
        return "trained"
    state = load_checkpoint(run_dir / CHECKPOINT)
    saved = {**RunConfig.from_dict(state["config"], str(run_dir / CHECKPOINT)).to_dict(), "data_spec": None}
    wanted = config.to_dict()
    epochs = wanted["train"]["epochs"]
    if {**saved, "train": {**saved["train"], "epochs": epochs}} != wanted:
        raise VaelabError(
            f"{run_dir} holds a run of another configuration than this point of the sweep; remove it or sweep into "
            "another --out"
        )
    if saved["train"]["epochs"] < epochs:  # a shorter run of this point: trained on, as if it had been this long
        train(None, run_dir, resume=True, epochs=epochs)
        return "extended"
    if saved["train"]["epochs"] > epochs:
        raise VaelabError(f"{run_dir} has trained {saved['train']['epochs']} epochs, more than the point's {epochs}")
    if state.get("finished"):
        return "kept"
    train(None, run_dir, resume=True)
    return "resumed"
