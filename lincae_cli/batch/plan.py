"""Where outputs go: every input paired with its output (beside it, a file, stdout, or a
mirrored folder), and the outputs that must not be written (existing, unwritable, colliding).

Planning only looks at the file system; it reports problems as `Failure`s and prints nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lincae_cli.batch.inputs import Failure, InputFile
from lincae_cli.errors import LincaeError
from lincae_cli.paths import STDIN_NAME, STDIO, is_npy_path, is_stdio


@dataclass(frozen=True)
class Task:
    """One input and where its output goes (a path, or ``-`` for stdout).

    ``create_parents``: the output lies in a folder named by ``-o`` (mirrored subfolders are
    created); otherwise its folder must exist.
    """

    input: InputFile
    output: str
    create_parents: bool = False

    @property
    def to_stdout(self) -> bool:
        return is_stdio(self.output)

    def prepare_parent(self) -> None:
        """Create the output's folder when ``-o`` named a folder."""
        if self.create_parents and not self.to_stdout:
            make_parent_folder(self.output)


def make_parent_folder(output: str) -> None:
    """Create the folder ``output`` goes in (mirrored subfolders of an ``-o`` folder)."""
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LincaeError(f"{output}: cannot create its folder ({error.strerror})") from None


def plan_outputs(
    inputs: Sequence[InputFile],
    output: str | None,
    suffix: str,
    is_output_file: Callable[[str], bool],
) -> tuple[list[Task], list[Failure]]:
    """Pair every input with its output path.

    Without ``-o``: beside the input, with ``suffix``; stdin goes to stdout. ``-o -``: stdout
    (a single input only). ``-o FILE`` (one input, ``is_output_file(FILE)``): that file.
    Otherwise ``-o`` is a folder: folder arguments are mirrored inside it, other files land at
    its top.
    """
    if output == STDIO:
        if len(inputs) != 1:
            raise LincaeError(f"-o - writes to stdout, which takes one input, not {len(inputs)}")
        return [Task(inputs[0], STDIO)], []
    tasks: list[Task] = []
    failures: list[Failure] = []
    folder_mode = output is not None and (
        len(inputs) > 1
        or any(item.relative is not None for item in inputs)
        or Path(output).is_dir()
        or output.endswith(("/", os.sep))
        or not is_output_file(output)
    )
    seen: dict[str, str] = {}
    for item in inputs:
        if output is None:
            target = STDIO if item.path is None else str(item.path.with_suffix(suffix))
        elif not folder_mode:
            target = output
        elif item.path is None:
            message = f"{STDIN_NAME}: give -o FILE (or -o -) for audio read from stdin"
            failures.append(Failure(item.name, message))
            continue
        else:
            relative = item.relative if item.relative is not None else Path(item.path.name)
            target = str(Path(output) / relative.with_suffix(suffix))
        if target != STDIO:
            if target in seen:
                message = f"{item.name}: output {target} is also the output of {seen[target]}"
                failures.append(Failure(item.name, message))
                continue
            seen[target] = item.name
        tasks.append(Task(item, target, create_parents=folder_mode))
    return tasks, failures


SKIP: Literal["skip"] = "skip"
"""What `triage` says of a task whose output exists, with ``skip_existing``."""


def triage(task: Task, force: bool, skip_existing: bool) -> Failure | Literal["skip"] | None:
    """Whether ``task`` may run: None (run it), `SKIP` (its output exists and
    ``skip_existing``), or the `Failure` that stops it (an existing output without ``force``,
    an output that would overwrite its input or cannot be written)."""
    if task.to_stdout:
        return None
    name, target = task.input.name, Path(task.output)
    if task.input.path is not None and _same_file(task.input.path, target):
        return Failure(name, f"{target}: output would overwrite its own input")
    if target.exists() and not force:
        if skip_existing:
            return SKIP
        return Failure(
            name,
            f"{target}: already exists (use --force to overwrite, --skip-existing to keep it)",
        )
    for written in _written_files(target):
        if written.is_dir():
            return Failure(name, f"{written}: is a directory")
        if written != target and written.exists() and not force:
            return Failure(name, f"{written}: already exists (use --force to overwrite)")
    problem = unwritable_reason(target, create_parents=task.create_parents)
    return Failure(name, f"{target}: {problem}") if problem else None


def check_single_output(output: str, force: bool) -> None:
    """For a job with one output (mix, gain, subtract): refuse to clobber or fail late."""
    if is_stdio(output):
        return
    target = Path(output)
    for written in _written_files(target):
        if written.is_dir():
            raise LincaeError(f"{written}: is a directory; give an output file name")
        if written.exists() and not force:
            raise LincaeError(f"{written}: already exists (use --force to overwrite)")
    problem = unwritable_reason(target, create_parents=False)
    if problem:
        raise LincaeError(f"{target}: {problem}")


def check_output_name(
    output: str | None, is_output_file: Callable[[str], bool], kinds: str
) -> None:
    """Refuse an ``-o`` whose extension names no output this command writes (``kinds`` says
    which do): a name with an extension is a file, a folder is one that exists or ends in
    ``/``. Where ``is_output_file`` raises, its error (a format this machine lacks) stands."""
    if output is None or is_stdio(output) or output.endswith(("/", os.sep)):
        return
    suffix = Path(output).suffix
    if suffix and not Path(output).is_dir() and not is_output_file(output):
        raise LincaeError(
            f"{output}: unknown output type {suffix!r}; name {kinds}, or a folder (end it with /)"
        )


def _written_files(target: Path) -> list[Path]:
    """The files writing ``target`` puts in place: a ``.npy`` brings its sidecar."""
    if is_npy_path(target):
        from lincae_cli.latents.npy import sidecar_path

        return [target, sidecar_path(target)]
    return [target]


def unwritable_reason(target: Path, create_parents: bool) -> str | None:
    """Why ``target`` cannot be created, or None if it looks writable."""
    parent = target.parent
    if not parent.exists() and not create_parents:
        return f"cannot write (directory {parent} does not exist)"
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot write ({existing} is not a directory)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write (directory {existing} is read-only)"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and a.samefile(b)
    except OSError:
        return False
