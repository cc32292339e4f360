"""The batching loop: windows of many jobs, read ahead on a thread, in fixed-size batches
through one forward function, outputs routed back to their jobs.

A reader thread cuts the jobs into windows (`batches`) while the model runs on the previous
batch, holding at most `READ_AHEAD_BATCHES` batches, whatever the length of the files. With
``readers`` > 1 (a GPU, which one reader would starve), the next jobs are read and cut at the
same time, each on its own thread and at most a batch of windows ahead; their windows still
enter the batches in the jobs' order. Only the main thread changes a job's state; the readers
merely stop cutting a job that is no longer open.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from lincae_cli.engine.jobs import Job, WindowItem
from lincae_cli.errors import LincaeError

READ_AHEAD_BATCHES = 2
T = TypeVar("T")


class ProgressListener(Protocol):
    """What `run_jobs` reports as it goes (engine/progress.py draws it as rich bars)."""

    def start(self, total_seconds: float, total_jobs: int, total_batches: int) -> None: ...

    def advance(self, seconds: float) -> None: ...

    def batch_done(self) -> None: ...

    def job_done(self, name: str, ok: bool) -> None: ...

    def stop(self) -> None: ...


@dataclass
class JobOutcome(Generic[T]):
    """A finished job: ``result`` (a LatentFile or a SinkReport) or ``error``."""

    job: Any
    result: T | None = None
    error: LincaeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Batch:
    """Up to a batch size of windows, and the jobs whose reading ended with this batch."""

    items: list[WindowItem] = field(default_factory=list)
    ended: list[Job] = field(default_factory=list)  # every window already in a batch
    unreadable: list[tuple[Job, LincaeError]] = field(default_factory=list)


def batches(jobs: Sequence[Job], batch_size: int, readers: int = 1) -> Iterator[Batch]:
    """The windows of ``jobs`` in order, packed into batches of ``batch_size`` (the last one
    may be short), the windows of up to ``readers`` jobs cut at once. A job whose input fails
    while being cut is reported in ``unreadable`` and its windows in the batch being filled
    are dropped."""
    batch = Batch()
    with contextlib.closing(job_windows(jobs, readers, max(2, batch_size))) as feeds:
        for job, windows in feeds:
            try:
                for item in windows:
                    if not job.is_open:  # failed on the main thread: stop reading it
                        break
                    batch.items.append(item)
                    if len(batch.items) == batch_size:
                        yield batch
                        batch = Batch()
            except LincaeError as error:
                batch.items = [item for item in batch.items if item.job is not job]
                batch.unreadable.append((job, error))
                continue
            batch.ended.append(job)
    if batch.items or batch.ended or batch.unreadable:
        yield batch


def job_windows(
    jobs: Sequence[Job], readers: int, depth: int
) -> Iterator[tuple[Job, Iterator[WindowItem]]]:
    """Each job with its windows, in order. With ``readers`` > 1 the windows of that many jobs
    are cut at once, each job on its own thread up to ``depth`` windows ahead; a job's
    reader stops when the loop moves past it or this generator is closed."""
    if readers <= 1:
        for job in jobs:
            yield job, job.windows()
        return
    upcoming = iter(jobs)
    started: deque[tuple[Job, ReadAhead[WindowItem]]] = deque()
    try:
        while True:
            while len(started) < readers and (job := next(upcoming, None)) is not None:
                started.append((job, ReadAhead(job.windows(), depth)))
            if not started:
                return
            job, windows = started.popleft()
            try:
                yield job, windows
            finally:
                windows.close()
    finally:
        for _, windows in started:
            windows.close()


class ReadAhead(Generic[T]):
    """``items`` as they come, produced on a background thread (started at once) up to
    ``depth`` ahead.

    An exception in the producer is raised by `__next__`; `close` (also at the end, after an
    exception, or when the reader is dropped) stops the producer at its next item, and the
    producer closes ``items`` if it is a generator (its files are closed on that thread).
    """

    def __init__(self, items: Iterable[T], depth: int, name: str = "lincae-reader") -> None:
        self._handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        # The thread holds the queue and the event, not this object, which can thus be dropped.
        args = (items, self._handoff, self._stop)
        self._producer = threading.Thread(target=_produce, args=args, name=name, daemon=True)
        self._producer.start()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        kind, value = self._handoff.get()
        if kind == "item":
            return value
        self.close()
        if kind == "raise":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._producer.join()

    def __del__(self) -> None:
        self._stop.set()


def _produce(
    items: Iterable[Any], handoff: queue.Queue[tuple[str, Any]], stop: threading.Event
) -> None:
    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(message, timeout=0.1)
                return True
        return False

    try:
        for item in items:
            if not put(("item", item)):
                return
        put(("end", None))
    except BaseException as error:  # a bug, or a failure to hand to the consumer
        put(("raise", error))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def read_ahead(items: Iterable[T], depth: int) -> ReadAhead[T]:
    """``items`` as they come, produced on a background thread up to ``depth`` ahead (see
    `ReadAhead`); close it (or leave it exhausted) to stop the producer."""
    return ReadAhead(items, depth)


def run_jobs(
    jobs: Sequence[Job],
    forward: Callable[[Sequence[WindowItem]], np.ndarray],
    batch_size: int,
    progress: ProgressListener | None = None,
    readers: int = 1,
) -> Iterator[JobOutcome[Any]]:
    """Run ``jobs``, ``forward`` taking one batch of windows at a time, and yield each job's
    outcome as it ends; the windows of up to ``readers`` jobs are cut at once (see `batches`).

    A job that fails (unreadable audio, unwritable output) yields an outcome with its
    `LincaeError`; the others go on. Stopping early (an exception, Ctrl-C, closing the
    generator) aborts the unfinished jobs, so no partial output is left behind.
    """
    if progress is not None:
        total_items = sum(job.total_items for job in jobs)
        total_seconds = sum(job.duration_seconds for job in jobs)
        progress.start(total_seconds, len(jobs), -(-total_items // batch_size))
    try:
        feed = read_ahead(batches(jobs, batch_size, readers), READ_AHEAD_BATCHES)
        with contextlib.closing(feed):
            for batch in feed:
                yield from _settle(batch, forward, progress)
    finally:
        for job in jobs:
            job.abort()  # no-op for the jobs that ended
        if progress is not None:
            progress.stop()


def _settle(
    batch: Batch,
    forward: Callable[[Sequence[WindowItem]], np.ndarray],
    progress: ProgressListener | None,
) -> Iterator[JobOutcome[Any]]:
    """Run one batch, hand each output to its job, and yield the jobs that ended."""
    failed: list[Job] = []
    for job, error in batch.unreadable:
        job.fail(error)
        failed.append(job)
    items = [item for item in batch.items if item.job.is_open]
    if items:
        for item, output in zip(items, forward(items), strict=True):
            job = item.job
            if not job.is_open:
                continue
            try:
                job.accept(item, output)
            except LincaeError as error:
                job.fail(error)
                failed.append(job)
            if progress is not None:
                progress.advance(job.seconds_of(item))
        if progress is not None:
            progress.batch_done()
    for job in batch.ended:
        if not job.is_open:
            continue
        try:
            result = job.complete()
        except LincaeError as error:
            job.fail(error)
            failed.append(job)
            continue
        if progress is not None:
            progress.job_done(job.name, True)
        yield JobOutcome(job, result=result)
    for job in failed:
        if progress is not None:
            progress.job_done(job.name, False)
        yield JobOutcome(job, error=job.error)
