"""Where training metrics go: metrics.jsonl, TensorBoard and a rich progress bar (terminals only)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Monitor:
    """Rank 0's logger. Costs nothing per step beyond a progress advance; values arrive per interval."""

    def __init__(self, run_dir: Path, total_steps: int, done_steps: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))
        self._progress = None
        if enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                refresh_per_second=2,  # each refresh costs ~1 ms of the training thread
            )
            self._task = self._progress.add_task("", total=total_steps, completed=done_steps, epoch=0)
            self._progress.start()

    def advance(self, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, epoch=epoch)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {**record, "time": time.time()}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        split, step = record.get("split", "train"), record["step"]
        for key, value in record.items():
            if key not in ("split", "step", "epoch", "time") and isinstance(value, (int, float)):
                self._tb.add_scalar(f"{split}/{key}", value, step)
        if self._progress is not None and split == "train":
            shown = {k: v for k, v in record.items() if k not in ("split", "step", "epoch", "time", "lr")}
            self._progress.update(self._task, description="  ".join(f"{k} {v:.4g}" for k, v in shown.items()))

    def print(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
