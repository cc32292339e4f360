"""How commands show what happened: error and warning lines as they happen, progress bars, the
summary line and the ``--json`` document. Everything printed on stderr except the JSON (on
stdout unless stdout carries data).

Every ``--json`` invocation prints exactly one document (docs/cli.md, "JSON output"; the
schema is docs/cli-json.schema.json): the command's own when it finishes, or, when an error
ends it early, `emit_error_document`'s, which the app calls from its one error handler.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from lincae_cli.batch.result import BatchResult, Record
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.engine.progress import RichProgress

# Commands whose document summarises a `BatchResult` (counts, seconds, model, rank), even when
# an error stops them before their first record.
BATCH_COMMANDS = frozenset(
    {"encode", "decode", "mix", "gain", "subtract", "trim", "pad", "fade", "concat", "info"}
)


class UsageError(LincaeError):
    """A command called the wrong way (printed as one line like any `LincaeError`, but exit
    code 2, as click's usage errors)."""


def error_line(message: str) -> None:
    typer.echo(f"lincae: error: {message}", err=True)


def warning_line(message: str) -> None:
    typer.echo(f"lincae: warning: {message}", err=True)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, recursively: standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def print_json(document: Any, to_stderr: bool = False) -> None:
    text = json.dumps(finite(document), indent=2, allow_nan=False, default=str)
    typer.echo(text, err=to_stderr)


# -- the one document of an invocation ----------------------------------------------------


@dataclass
class JsonRequest:
    """An invocation with ``--json``: its command (``models list`` for a subcommand), where
    the document goes, the batch reported so far, and whether the document was printed."""

    command: str
    to_stderr: bool = False
    result: BatchResult | None = None
    started: float = field(default_factory=time.perf_counter)
    printed: bool = False


# The request of the invocation under way: one per process, set by the app for each run (tests
# run the app many times in one process), None without --json or outside the CLI.
_request: JsonRequest | None = None


def request_json(command: str | None) -> None:
    """Start an invocation: ``command`` asked for ``--json`` (None: it did not)."""
    global _request
    _request = None if command is None else JsonRequest(command)


def json_to_stderr(stdout_carries_data: bool) -> None:
    """Where this invocation's document goes, once the command knows whether stdout carries
    data (then stderr)."""
    if _request is not None:
        _request.to_stderr = stdout_carries_data


def emit_json(document: dict[str, Any], to_stderr: bool | None = None) -> None:
    """Print a command's document: on stderr when ``to_stderr`` (None: where this invocation's
    request says), and only once per invocation."""
    request = _request
    if request is not None:
        if request.printed:
            return
        request.printed = True
        if to_stderr is None:
            to_stderr = request.to_stderr
    print_json(document, to_stderr=bool(to_stderr))


def emit_error_document(message: str) -> None:
    """The document of an invocation that an error ended before it printed its own: status
    ``error`` and ``message``, with the records its batch reported until then."""
    request = _request
    if request is None or request.printed:
        return
    if request.command in BATCH_COMMANDS:
        result = request.result or BatchResult(request.command)
        document = batch_document(result, time.perf_counter() - request.started, message)
    else:
        document = command_document(request.command, error=message)
    request.printed = True
    print_json(document, to_stderr=request.to_stderr)


def command_document(
    command: str, error: str | None = None, files: Iterable[Record] = (), **extra: Any
) -> dict[str, Any]:
    """The keys every document has (``command``, ``status``, ``error``, ``files``), then the
    command's own. Every entry of ``files`` gets the keys any of them has (None if missing)."""
    records = list(files)
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return {
        "command": command,
        "status": "ok" if error is None else "error",
        "error": error,
        "files": [{key: record.get(key) for key in keys} for record in records],
        **extra,
    }


def batch_document(result: BatchResult, wall_seconds: float, error: str | None) -> dict[str, Any]:
    """A batch's document: counts, seconds of audio, wall time, throughput (None when no model
    ran: latent arithmetic, ``info``), model, device, torchrun rank; its records as ``files``."""
    seconds = result.audio_seconds
    ran_model = "model" in result.info
    speed = seconds / wall_seconds if ran_model and wall_seconds > 0 else None
    return command_document(
        result.command,
        error,
        result.records,
        ok=result.count("ok"),
        skipped=result.count("skipped"),
        failed=result.count("failed"),
        audio_seconds=round(float(seconds), 3),
        wall_seconds=round(wall_seconds, 3),
        x_realtime=None if speed is None else round(speed, 2),
        **{"model": None, "device": None, "rank": None, "world_size": None, **result.info},
    )


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
        request = _request
        if json_output and request is not None:
            # An error that ends the command early still reports what this batch did.
            request.result, request.to_stderr = self.result, stdout_busy

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
        """Print the summary (and the JSON document); the exit code (1 if anything failed)."""
        result = self.result
        wall = time.perf_counter() - self._started
        failed = result.count("failed")
        error = None
        if failed:
            names = ", ".join(r["input"] for r in result.records if r["status"] == "failed")
            error = f"{failed} of {len(result.records)} failed: {names}"
        document = batch_document(result, wall, error)
        if error is not None:
            typer.echo(f"lincae: {result.command}: {error}", err=True)
        elif not self.quiet and len(result.records) > 1:
            speed = document["x_realtime"]
            typer.echo(
                f"lincae: {result.command}: {document['ok']} done, {document['skipped']} "
                f"skipped, {document['audio_seconds']:.1f} s of audio in {wall:.1f} s"
                + ("" if speed is None else f" ({speed:.1f}x realtime)"),
                err=True,
            )
        if self.json_output:
            emit_json(document, to_stderr=self.stdout_busy)
        return 1 if failed else 0
