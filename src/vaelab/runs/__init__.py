"""Run folders: the run config, the folder's files (config, kept weights, checkpoint, metrics, reports) and loading;
``reports``: report files keyed by their settings and stamped with the weights they were computed from.

``from_pretrained`` reads any saved module; ``load`` a whole run (its model, data access, a VQ run's code prior)."""

from vaelab.runs.config import RunConfig, TrainConfig, absolute, data_now, make_run_config
from vaelab.runs.folder import (
    CHECKPOINT,
    METRICS,
    MODEL_DIR,
    load_checkpoint,
    load_model_state,
    read_config,
    read_metrics,
    save_checkpoint,
    save_config,
    save_weights,
    write_json,
)
from vaelab.runs.load import PRIOR_DIR, Run, attach_prior, from_pretrained, load
from vaelab.runs.reports import REPORT_KINDS, Stale, report_files, report_name, stale_reports

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "MODEL_DIR",
    "PRIOR_DIR",
    "REPORT_KINDS",
    "Run",
    "RunConfig",
    "Stale",
    "TrainConfig",
    "absolute",
    "attach_prior",
    "data_now",
    "from_pretrained",
    "load",
    "load_checkpoint",
    "load_model_state",
    "make_run_config",
    "read_config",
    "read_metrics",
    "report_files",
    "report_name",
    "save_checkpoint",
    "save_config",
    "save_weights",
    "stale_reports",
    "write_json",
]
