"""Where training metrics go: metrics.jsonl (rows written whole, one line each), TensorBoard, RUN/train.log, and
the progress display (``vaelab.core.progress``: a bar with the ETA on a terminal, a plain line every 30 s off one).

A resume starts from a checkpoint that vouches for the first ``rows`` rows of metrics.jsonl: the file is cut back
to them (and TensorBoard's events from the checkpoint's step on are purged), so every step appears once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from vaelab.core.pretrained import write_failure
from vaelab.core.progress import Progress
from vaelab.runs.folder import LOG, METRICS, metrics_rows, truncate_metrics

SHOWN = ("loss", "reconstruction", "kl", "elbo")  # the status line's terms first, when a model has them


class Monitor:
    """Rank 0's logger. Costs nothing per step beyond a progress advance; values arrive per interval."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        done_steps: int,
        rows: int | None = 0,
        enabled: bool = True,
        title: str = "training",
    ) -> None:
        self.enabled = enabled
        self.rows = rows or 0
        self._jsonl = None
        self._tb = None
        self.progress = Progress(total_steps, "epoch 1", "steps", done_steps, Path(run_dir) / LOG, enabled=enabled)
        if not enabled:
            return
        self.progress.print(title)
        path = Path(run_dir) / METRICS
        try:
            if rows is None:  # a checkpoint that counted no rows (an earlier vaelab): keep what is there
                self.rows = len(metrics_rows(path, warn=False))
            elif done_steps or path.exists():
                truncate_metrics(run_dir, rows)
            self._jsonl = open(path, "a")
        except OSError as e:
            raise write_failure(path, e) from None
        self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=done_steps if done_steps else None)

    def advance(self, epoch: int) -> None:
        if self.enabled:
            if self.progress.description != f"epoch {epoch}":
                self.progress.describe(f"epoch {epoch}")
            self.progress.advance()

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {**record, "time": time.time()}
        line = json.dumps(record) + "\n"
        try:
            self._jsonl.write(line)  # one write of a whole row; a kill mid-write leaves a partial line at worst
            self._jsonl.flush()
        except OSError as e:
            raise write_failure(Path(self._jsonl.name), e) from None
        self.rows += 1
        split, step = record.get("split", "train"), record["step"]
        for key, value in record.items():
            if key not in ("split", "step", "epoch", "time") and isinstance(value, (int, float)):
                self._tb.add_scalar(f"{split}/{key}", value, step)
        if split == "train":
            keys = [k for k in SHOWN if k in record] + [k for k in record if k not in (*SHOWN, *IGNORED)]
            self.progress.status("  ".join(f"{k} {record[k]:.4g}" for k in keys if isinstance(record[k], float)))
        elif split == "val":
            shown = "  ".join(f"{k} {record[k]:.4g}" for k in SHOWN if k in record)
            self.progress.print(f"epoch {record['epoch']}: validation {shown}")

    def print(self, message: str) -> None:
        self.progress.print(message)

    def describe(self, text: str) -> None:
        """What the job is doing between steps (e.g. validating), shown in place of the epoch until the next step."""
        if self.enabled:
            self.progress.describe(text)

    def close(self) -> None:
        self.progress.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


IGNORED = ("split", "step", "epoch", "time", "lr", "samples_per_s")
