"""How commands show what happened: error and warning lines as they happen, progress bars, the
summary line and the ``--json`` document. Everything printed on stderr except the JSON (on
stdout unless stdout carries data)."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from lincae_cli.batch.result import BatchResult, Record
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.engine.progress import RichProgress


class UsageError(LincaeError):
    """A command called the wrong way (printed as one line like any `LincaeError`, but exit
    code 2, as click's usage errors)."""


def error_line(message: str) -> None:
    typer.echo(f"lincae: error: {message}", err=True)


def warning_line(message: str) -> None:
    typer.echo(f"lincae: warning: {message}", err=True)


def print_json(document: Any, to_stderr: bool = False) -> None:
    text = json.dumps(document, indent=2, allow_nan=False, default=str)
    typer.echo(text, err=to_stderr)


def clip_warning(record: Record) -> str:
    """The warning for a decoded output that clips (its record has ``peak`` and
    ``clipped_samples``)."""
    peak = record["peak"]
    peak_db = 20 * math.log10(peak) if peak > 0 else float("-inf")
    return (
        f"{record['output']}: decoded audio clips ({record['clipped_samples']} samples beyond "
        f"full scale, peak {peak_db:+.1f} dBFS); use --normalize or --limit, or lower the gain"
    )


class Reporter:
    """Shows a command's `BatchResult` (``result``): each failure as it happens, a warning for
    clipping outputs, then a summary and the JSON document (`finish`)."""

    def __init__(self, command: str, quiet: bool, json_output: bool, stdout_busy: bool) -> None:
        self.quiet = quiet
        self.json_output = json_output
        self.stdout_busy = stdout_busy
        self.result = BatchResult(command, on_record=self._show)
        self._started = time.perf_counter()

    def _show(self, record: Record) -> None:
        if record["status"] == "failed":
            error_line(record["error"])
        elif record.get("clipped_samples"):
            warning_line(clip_warning(record))

    def progress(self, verb: str) -> RichProgress | None:
        """Rich progress bars on stderr when it is a terminal and not ``--quiet``; else None."""
        if self.quiet or not sys.stderr.isatty():
            return None
        from lincae_cli.engine.progress import RichProgress

        return RichProgress(verb)

    def finish(self) -> int:
        """Print the summary; the exit code (1 if anything failed)."""
        result = self.result
        wall = time.perf_counter() - self._started
        failed = result.count("failed")
        done, skipped = result.count("ok"), result.count("skipped")
        seconds = result.audio_seconds
        speed = seconds / wall if wall > 0 else 0.0
        if failed:
            names = ", ".join(r["input"] for r in result.records if r["status"] == "failed")
            typer.echo(
                f"lincae: {result.command}: {failed} of {len(result.records)} failed: {names}",
                err=True,
            )
        elif not self.quiet and len(result.records) > 1:
            typer.echo(
                f"lincae: {result.command}: {done} done, {skipped} skipped, "
                f"{seconds:.1f} s of audio in {wall:.1f} s ({speed:.1f}x realtime)",
                err=True,
            )
        if self.json_output:
            summary = {
                "command": result.command,
                "ok": done,
                "skipped": skipped,
                "failed": failed,
                "audio_seconds": round(seconds, 3),
                "wall_seconds": round(wall, 3),
                "x_realtime": round(speed, 2),
                **result.info,
                "files": result.records,
            }
            print_json(summary, to_stderr=self.stdout_busy)
        return 1 if failed else 0
