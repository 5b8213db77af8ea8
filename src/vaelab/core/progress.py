"""Progress of every long job: a bar with the count and the ETA on a terminal, and off a terminal (a log file, CI, a
cluster job) a plain line at least every ``VAELAB_PROGRESS_SECONDS`` seconds (30 by default), also appended to a
log file when one is given. The plain lines come from a heartbeat thread too, so a single step that takes longer
than the interval (one batch of an IWAE bound at K = 1000, one disentanglement metric) still shows a line in time.

On a terminal the bar, the count and the ETA share the first line and the live status (e.g. the loss terms) has a
line of its own, so at 80 columns nothing pushes the bar or the ETA off the screen.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

ENV_SECONDS = "VAELAB_PROGRESS_SECONDS"


def plain_interval() -> float:
    """Seconds between plain progress lines off a terminal ($VAELAB_PROGRESS_SECONDS, default 30)."""
    try:
        return max(0.0, float(os.environ.get(ENV_SECONDS, "30")))
    except ValueError:
        return 30.0


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _TwoLines(RichProgress):
    """A rich progress display whose task status text is a line of its own under the bar."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            status = task.fields.get("status", "")
            if status:
                yield Text(status, overflow="ellipsis", no_wrap=True, style="dim")


class Progress:
    """``with Progress(total, "training") as p: p.advance(); p.status("loss 93.2")``.

    ``done`` starts the count (a resumed job); ``log`` also receives the plain lines (e.g. RUN/train.log);
    ``enabled=False`` makes every call a no-op (the other ranks of a distributed run)."""

    def __init__(
        self,
        total: int,
        description: str,
        unit: str = "steps",
        done: int = 0,
        log: Path | None = None,
        console: Console | None = None,
        enabled: bool = True,
    ) -> None:
        self.total, self.description, self.unit = max(int(total), 0), description, unit
        self.done, self.start_done = int(done), int(done)
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.log = log
        self._status = ""
        self._start = time.monotonic()
        self._last_line = self._start
        self._every = plain_interval()
        self._bar: _TwoLines | None = None
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if enabled and self.console.is_terminal:
            self._bar = _TwoLines(
                TextColumn(
                    "[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=28)
                ),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                refresh_per_second=2,  # each refresh costs ~1 ms of the job's thread
            )
            self._task = self._bar.add_task(description, total=self.total or None, completed=self.done, status="")
            self._bar.start()
        if enabled:
            self._line()
        if enabled and self._bar is None and self._every > 0:
            self._heartbeat = threading.Thread(target=self._beat, name="vaelab-progress", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Off a terminal: a line whenever none was written for the interval, however long one step takes."""
        while not self._quit.wait(min(self._every, max(0.05, self._last_line + self._every - time.monotonic()))):
            if time.monotonic() - self._last_line >= self._every:
                self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(finished=kind is None)

    def advance(self, n: int = 1) -> None:
        if not self.enabled:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif time.monotonic() - self._last_line >= self._every:
            self._line()

    def status(self, text: str) -> None:
        """The live status shown with the progress (kept short; on a terminal it has its own line)."""
        if not self.enabled:
            return
        self._status = text
        if self._bar is not None:
            self._bar.update(self._task, status=text)

    def describe(self, description: str) -> None:
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def eta(self) -> float:
        elapsed = time.monotonic() - self._start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        return (self.total - self.done) / rate if rate > 0 else math.inf

    def line(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = duration(time.monotonic() - self._start)
        count = f"{self.done}/{self.total} {self.unit}{share}"
        text = f"{self.description}: {count}, {elapsed} elapsed, ETA {duration(self.eta())}"
        return f"{text} | {self._status}" if self._status else text

    def _line(self) -> None:
        with self._lock:  # the heartbeat thread and the job's thread write lines
            self._last_line = time.monotonic()
            text = self.line()
            if self._bar is None:
                self.console.print(text, highlight=False, markup=False, soft_wrap=True)
            self._append(text)

    def _append(self, text: str) -> None:
        if self.log is not None:
            try:
                with open(self.log, "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            except OSError:
                self.log = None  # a log that cannot be written must not stop the job

    def print(self, message: str) -> None:
        """A message above the bar (and in the log)."""
        if not self.enabled:
            return
        with self._lock:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)
            self._append(message)

    def close(self, finished: bool = True) -> None:
        """Stop the bar and write the last line (the console and the log)."""
        if not self.enabled:
            return
        self._quit.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._line()
        self.enabled = False
