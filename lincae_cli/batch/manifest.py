"""The manifest of a catalogue encoded into a folder ``OUT``: what every input became.

While ``encode --manifest`` runs, each process appends one JSON line per finished input to its
own part, ``OUT/.lincae-manifest/ATTEMPT.rankRRRRR.jsonl`` (``status`` ``ok`` with the
output's facts, or ``failed`` with the one-line ``error``), and records its share of the
inputs in ``ATTEMPT.rankRRRRR.plan.json``. `lincae manifest OUT/` (batch/catalogue.py) merges
the parts into ``OUT/manifest.jsonl``, one line per input. The line format: docs/scale.md.

A line is written with one ``write`` on a file opened with ``O_APPEND`` and fsynced before the
next input is reported, so a crash can at worst tear the last line of a part; readers skip a
line that is not complete JSON, and a writer reopening a part ends a torn line first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.errors import LincaeError
from lincae_cli.version import __version__

if TYPE_CHECKING:
    from lincae_cli.latents.latfile import LatentFile

PARTS_FOLDER = ".lincae-manifest"
MANIFEST_NAME = "manifest.jsonl"
Line = dict[str, Any]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PART_NAME = re.compile(r"(?P<attempt>.+)\.rank(?P<rank>\d{5})\.(?P<kind>jsonl|plan\.json)")


def now() -> str:
    """UTC, ISO 8601 to the microsecond: lines of one input sort by it."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def ok_line(input_name: str, output: str, lat: LatentFile) -> Line:
    """The line of an input encoded to ``output`` (relative to OUT, with ``/``)."""
    meta = lat.meta
    return {
        "input": input_name,
        "output": output,
        "status": "ok",
        "duration_seconds": round(meta.duration_seconds, 6),
        "channels": lat.channels,
        "frames": lat.frames,
        "latent_channels": lat.latent_channels,
        "sample_rate": meta.source_sample_rate,
        "loudness_lufs": meta.source_loudness_lufs,
        "model": meta.model_name,
        "model_sha256": meta.model_sha256,
        "lincae_version": meta.lincae_version,
    }


def failed_line(input_name: str, output: str | None, error: str) -> Line:
    """The line of an input that failed (``output``: where it would have gone, if known)."""
    line: Line = {"input": input_name}
    if output is not None:
        line["output"] = output
    return {**line, "status": "failed", "error": error, "lincae_version": __version__}


def line_key(line: Line) -> str:
    """What identifies an input across runs: its output in OUT, else its name."""
    return str(line.get("output") or line["input"])


# -- writing ----------------------------------------------------------------------------------


class PartWriter:
    """Appends lines to one process's part (created with its folder when needed)."""

    def __init__(self, out: Path, attempt: str, rank: int) -> None:
        self.path = out / PARTS_FOLDER / f"{_stem(attempt, rank)}.jsonl"
        self.attempt, self.rank = attempt, rank
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                self._write(b"\n")  # a torn line from a crashed writer stays one bad line
        except OSError as error:
            raise LincaeError(f"{self.path}: cannot write ({error.strerror or error})") from None

    def append(self, line: Line) -> None:
        stamped = {**line, "time": now(), "rank": self.rank, "attempt": self.attempt}
        text = json.dumps(stamped, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._write(text.encode() + b"\n")

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as error:
            raise LincaeError(f"{self.path}: cannot write ({error.strerror or error})") from None
        if written != len(data):  # a full disk: the rest would tear the line
            raise LincaeError(f"{self.path}: cannot write (disk full?)")

    def close(self) -> None:
        os.close(self._fd)


def write_plan(out: Path, attempt: str, rank: int, plan: dict[str, Any]) -> None:
    """Record this process's share of an attempt (``ATTEMPT.rankRRRRR.plan.json``)."""
    path = out / PARTS_FOLDER / f"{_stem(attempt, rank)}.plan.json"
    document = {"attempt": attempt, "rank": rank, "time": now(), **plan}
    atomic_write_bytes(path, json.dumps(document, ensure_ascii=False).encode())


def _stem(attempt: str, rank: int) -> str:
    # torchrun's run id is whatever --rdzv-id said: keep it to characters safe in a file name.
    return f"{_UNSAFE.sub('_', attempt)}.rank{rank:05d}"


# -- reading ----------------------------------------------------------------------------------


@dataclass
class Parts:
    """Everything the processes of every attempt wrote under ``OUT/.lincae-manifest``."""

    lines: list[Line] = field(default_factory=list)
    plans: list[dict[str, Any]] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)  # "part:line" of each line skipped


def read_parts(out: Path) -> Parts:
    """Read the parts and plans of every attempt, in name order."""
    parts = Parts()
    folder = out / PARTS_FOLDER
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return parts
    except OSError as error:
        raise LincaeError(f"{folder}: cannot read ({error.strerror or error})") from None
    for name in names:
        match = _PART_NAME.fullmatch(name)
        if match is None:
            continue
        if match["kind"] == "jsonl":
            lines, torn = read_lines(folder / name)
            parts.lines += lines
            parts.torn += [f"{folder / name}:{number}" for number in torn]
        else:
            try:
                parts.plans.append(json.loads((folder / name).read_bytes()))
            except (OSError, ValueError):
                parts.torn.append(str(folder / name))
    return parts


def read_lines(path: Path) -> tuple[list[Line], list[int]]:
    """The complete lines of a JSON-lines file, and the numbers of the lines skipped (torn by
    a crash: no newline, not JSON, or not a manifest line)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LincaeError(f"{path}: cannot read ({error.strerror or error})") from None
    lines: list[Line] = []
    torn: list[int] = []
    chunks = data.split(b"\n")
    for number, chunk in enumerate(chunks, start=1):
        if not chunk.strip():
            continue
        line = _parse(chunk) if number < len(chunks) else None  # the last has no newline
        if line is None:
            torn.append(number)
        else:
            lines.append(line)
    return lines, torn


def _parse(chunk: bytes) -> Line | None:
    try:
        line = json.loads(chunk)
    except ValueError:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("input"), str):
        return None
    if line.get("status") not in ("ok", "failed"):
        return None
    return line


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per input: a success beats a failure, then the latest line wins; a failure of
    a name that was later done under another key (a missing file since added) is dropped.
    Sorted by key."""
    best: dict[str, Line] = {}
    for line in lines:
        key = line_key(line)
        held = best.get(key)
        if held is None or _rank(line) >= _rank(held):
            best[key] = line
    done_inputs = {line["input"] for line in best.values() if line["status"] == "ok"}
    return [
        best[key]
        for key in sorted(best)
        if best[key]["status"] == "ok" or best[key]["input"] not in done_inputs
    ]


def _rank(line: Line) -> tuple[bool, str]:
    return line["status"] == "ok", str(line.get("time", ""))
