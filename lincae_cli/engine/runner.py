"""The batching loop: windows of many jobs, read ahead on a thread, in fixed-size batches
through one forward function, outputs routed back to their jobs.

A reader thread cuts the jobs into windows (`batches`) while the model runs on the previous
batch, holding at most `READ_AHEAD_BATCHES` batches, whatever the length of the files. Only
the main thread changes a job's state; the reader merely stops cutting a job that is no longer
open.
"""

from __future__ import annotations

import contextlib
import queue
import threading
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


def batches(jobs: Sequence[Job], batch_size: int) -> Iterator[Batch]:
    """The windows of ``jobs`` in order, packed into batches of ``batch_size`` (the last one
    may be short). A job whose input fails while being cut is reported in ``unreadable`` and
    its windows in the batch being filled are dropped."""
    batch = Batch()
    for job in jobs:
        try:
            for item in job.windows():
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


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """``items`` as they come, produced on a background thread up to ``depth`` ahead.

    An exception in the producer is raised here; closing this generator (or leaving a loop
    over it early) stops the producer at its next item.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(message, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # a bug, or a failure to hand to the consumer
            put(("raise", error))

    producer = threading.Thread(target=produce, name="lincae-reader", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "raise":
                raise value
            yield value
    finally:
        stop.set()
        producer.join()


def run_jobs(
    jobs: Sequence[Job],
    forward: Callable[[Sequence[WindowItem]], np.ndarray],
    batch_size: int,
    progress: ProgressListener | None = None,
) -> Iterator[JobOutcome[Any]]:
    """Run ``jobs``, ``forward`` taking one batch of windows at a time, and yield each job's
    outcome as it ends.

    A job that fails (unreadable audio, unwritable output) yields an outcome with its
    `LincaeError`; the others go on. Stopping early (an exception, Ctrl-C, closing the
    generator) aborts the unfinished jobs, so no partial output is left behind.
    """
    if progress is not None:
        total_items = sum(job.total_items for job in jobs)
        total_seconds = sum(job.duration_seconds for job in jobs)
        progress.start(total_seconds, len(jobs), -(-total_items // batch_size))
    try:
        with contextlib.closing(read_ahead(batches(jobs, batch_size), READ_AHEAD_BATCHES)) as feed:
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
