"""What the inputs of a file-per-file job are: files as given, folders searched recursively,
glob patterns expanded, ``-`` for stdin."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from lincae_cli.paths import STDIN_NAME, STDIO

_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One input: a path (``relative`` is its place inside a folder argument), or stdin."""

    path: Path | None
    relative: Path | None = None

    @property
    def is_stdin(self) -> bool:
        return self.path is None

    @property
    def name(self) -> str:
        return STDIN_NAME if self.path is None else str(self.path)

    @property
    def arg(self) -> str:
        return STDIO if self.path is None else str(self.path)


@dataclass(frozen=True)
class Failure:
    """An input that cannot be processed, and the one-line reason (it names the input)."""

    name: str
    message: str


def expand_inputs(
    args: Sequence[str], suffixes: Collection[str], kind: str
) -> tuple[list[InputFile], list[Failure]]:
    """Files named by ``args``: files as given, folders searched recursively for ``suffixes``
    (``kind`` names them in messages), glob patterns expanded, ``-`` for stdin."""
    inputs: list[InputFile] = []
    failures: list[Failure] = []
    stdin_seen = False
    for arg in args:
        if arg == STDIO:
            if stdin_seen:
                failures.append(Failure(STDIN_NAME, f"{STDIN_NAME}: given more than once"))
            stdin_seen = True
            inputs.append(InputFile(None))
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            found = _folder_files(path, suffixes)
            if not found:
                failures.append(Failure(arg, f"{arg}: no {kind} files found in this folder"))
            inputs.extend(InputFile(file, file.relative_to(path)) for file in found)
        elif path.exists():
            inputs.append(InputFile(path))
        elif not _GLOB_CHARACTERS & set(arg):
            # Reported before any model loads: a typo should fail in milliseconds.
            failures.append(Failure(arg, f"{arg}: no such file"))
        else:
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            files = [Path(match) for match in matches if Path(match).is_file()]
            if not files:
                failures.append(Failure(arg, f"{arg}: no file matches this pattern"))
            inputs.extend(InputFile(file) for file in files)
    return inputs, failures


def _folder_files(folder: Path, suffixes: Collection[str]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            # Hidden files include the partial outputs of an interrupted run.
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                found.append(Path(root) / name)
    return found


def read_stdin_once(inputs: Sequence[InputFile]) -> bytes | None:
    """All of stdin when an input is ``-`` (read once, before any work), else None."""
    if any(item.is_stdin for item in inputs):
        return sys.stdin.buffer.read()
    return None
