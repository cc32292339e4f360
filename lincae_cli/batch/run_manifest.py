"""One process's side of ``encode --manifest``: its part of the manifest, what earlier attempts
finished, and the lines of what it does (batch/manifest.py has the format)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lincae_cli.batch.manifest import (
    Line,
    PartWriter,
    failed_line,
    line_key,
    now,
    ok_line,
    read_parts,
    write_plan,
)
from lincae_cli.batch.plan import Task
from lincae_cli.batch.result import BatchResult, Record
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.engine.shard import ShardInfo
    from lincae_cli.latents.latfile import LatentFile


class RunManifest:
    """Reports every input of this process to its part of ``out``'s manifest.

    Failures are taken from the `BatchResult` as they are recorded (those found while
    planning, which every rank sees, are written by rank 0 only); finished outputs are reported
    with `done`. `close` ends the reporting.
    """

    def __init__(self, out: Path, shard: ShardInfo, tasks: list[Task], result: BatchResult):
        self.out = out
        self.attempt = shard.attempt or f"run-{now()[:19].replace(':', '')}-{uuid.uuid4().hex[:8]}"
        earlier = read_parts(out).lines
        self.writer = PartWriter(out, self.attempt, shard.rank)
        self._shard = shard
        self._known = {line_key(line) for line in earlier if line["status"] == "ok"}
        # Finished by an earlier attempt: its parts are complete and the same for every rank.
        self._finished_before = {
            line_key(line)
            for line in earlier
            if line["status"] == "ok" and line.get("attempt") != self.attempt
        }
        self._outputs = {task.input.name: self.relative(task.output) for task in tasks}
        self._result, self._previous = result, result.on_record
        if shard.rank == 0:
            for record in result.records:
                self._observe(record)
        result.on_record = self._on_record

    def relative(self, output: str) -> str:
        """An output's place in the catalogue (``/``-separated, relative to ``out``)."""
        return Path(output).relative_to(self.out).as_posix()

    def done_before(self, tasks: Iterable[Task]) -> set[str]:
        """Outputs (as in ``tasks``) that an earlier attempt finished and that still exist.

        Only when every rank of this launch can tell earlier attempts from this one (torchrun's
        run id); otherwise nothing is set aside and existing outputs are skipped one by one.
        """
        if not self._shard.is_distributed or self._shard.attempt is None:
            return set()
        finished = self._finished_before
        return _existing([task.output for task in tasks if self.relative(task.output) in finished])

    def knows(self, task: Task) -> bool:
        """Whether some part already has a success line for ``task``'s output."""
        return self.relative(task.output) in self._known

    def record_plan(self, tasks: list[Task], shard: ShardInfo, plan_sha256: str) -> None:
        outputs = [[task.input.name, self.relative(task.output)] for task in tasks]
        plan = {
            "world_size": shard.world_size,
            # Whether the other ranks' plans carry the same attempt (torchrun's run id).
            "shared_attempt": shard.attempt is not None or not shard.is_distributed,
            "plan_sha256": plan_sha256,
            "outputs": outputs,
        }
        write_plan(self.out, self.attempt, shard.rank, plan)

    def done(self, task: Task, lat: LatentFile) -> None:
        self._append(ok_line(task.input.name, self.relative(task.output), lat))

    def adopt(self, task: Task, result: BatchResult) -> None:
        """Report an existing output that no line describes (its run stopped before reporting
        it, or ran without --manifest): skipped when it is a valid .lat, else failed."""
        from lincae_cli.latents.latfile import read_lat

        try:
            lat = read_lat(task.output)
        except LincaeError as error:
            message = f"{error}; --skip-existing keeps it: remove it, or use --force"
            result.failed(task.input.name, message)
            return
        self.done(task, lat)
        result.skipped(task.input.name, task.output)

    def close(self) -> None:
        self._result.on_record = self._previous
        self.writer.close()

    def _on_record(self, record: Record) -> None:
        if self._previous is not None:
            self._previous(record)
        self._observe(record)

    def _observe(self, record: Record) -> None:
        if record["status"] == "failed":
            name = record["input"]
            self._append(failed_line(name, self._outputs.get(name), record["error"]))

    def _append(self, line: Line) -> None:
        self.writer.append(line)
        if line["status"] == "ok":
            self._known.add(line_key(line))


def _existing(paths: list[str]) -> set[str]:
    """Which of ``paths`` exist, listing each folder once (cheaper than a stat per file on a
    shared file system)."""
    by_folder: dict[Path, list[str]] = {}
    for path in paths:
        by_folder.setdefault(Path(path).parent, []).append(path)
    found = set()
    for folder, members in by_folder.items():
        try:
            names = set(os.listdir(folder))
        except OSError:
            continue
        found.update(path for path in members if Path(path).name in names)
    return found
