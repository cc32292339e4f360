"""Rich progress bars on stderr: `RichProgress` for `Engine.run` (batches, and overall audio
time with x-realtime), `StepsProgress` for loops of numbered steps (training)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RealtimeColumn(ProgressColumn):
    """Seconds of audio processed per second of wall time."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if task.fields.get("realtime") is None or elapsed <= 0:
            return Text("")
        return Text(f"{task.completed / elapsed:.1f}x realtime", style="cyan")


class RichProgress:
    """Two bars on stderr: batches done, and audio seconds done (files, x-realtime, ETA)."""

    def __init__(self, verb: str, console: Console | None = None) -> None:
        self.verb = verb
        self._console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._overall = self._batches = None
        self._jobs_done = 0
        self._jobs_total = 0
        self._batch_items = 0.0
        self._started = 0.0

    def start(self, total_seconds: float, total_jobs: int, total_batches: int) -> None:
        self._jobs_total = total_jobs
        self._started = time.perf_counter()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            _RealtimeColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._progress.start()
        self._batches = self._progress.add_task("batches", total=max(1, total_batches))
        self._overall = self._progress.add_task(
            self._describe(), total=max(total_seconds, 1e-9), realtime=True
        )

    def _describe(self) -> str:
        return f"{self.verb} {self._jobs_done}/{self._jobs_total} files (s of audio)"

    def advance(self, seconds: float) -> None:
        if self._progress is None or self._overall is None:
            return
        self._progress.advance(self._overall, seconds)

    def batch_done(self) -> None:
        if self._progress is not None and self._batches is not None:
            self._progress.advance(self._batches, 1)

    def job_done(self, name: str, ok: bool) -> None:
        self._jobs_done += 1
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, description=self._describe())

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class StepsProgress:
    """One bar on stderr for a loop of numbered steps: label, bar, steps done of the total, a
    free-text info field (e.g. the loss) and the time remaining. Use as a context manager; the
    bar stays on screen when it stops."""

    def __init__(
        self, label: str, total: int, completed: int = 0, console: Console | None = None
    ) -> None:
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=completed, info="")

    def __enter__(self) -> StepsProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, completed: int, info: str = "") -> None:
        """`completed` steps done so far; `info` replaces the text after the count."""
        self._progress.update(self._task, completed=completed, info=info)
