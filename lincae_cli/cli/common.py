"""What the commands share: options and option groups, input expansion, output planning,
running engine jobs, reporting.

Nothing here imports torch: `lincae --help` and `lincae info` stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.engine.shard import ShardInfo

STDIO = "-"
LAT_SUFFIX = ".lat"
_GLOB_CHARACTERS = frozenset("*?[")

# -- options shared by several commands -------------------------------------------------------


def inputs_argument(files: str) -> Any:
    """The INPUTS of a file-per-file command (see `expand_inputs`); ``files``: "Audio files"."""
    return typer.Argument(
        help=f"{files}, folders (searched recursively), glob patterns, or - for stdin.",
        show_default=False,
    )


def output_option(help_text: str) -> Any:
    """``--output``/``-o``; ``help_text`` says what the command writes there."""
    return typer.Option("--output", "-o", help=help_text, show_default=False)


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model: a name from `lincae models`, hf://owner/repo/file.safetensors[@rev], or a "
        ".safetensors path. Default: lincae-small for encoding; for decoding, the model "
        "recorded in the .lat file.",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda (or cuda:N) or mps. auto prefers a GPU.")
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Chunks per forward pass, taken from as many files as needed. "
        "Default: 1 on CPU (a chunk already uses every core), 8 on GPU.",
        show_default=False,
    ),
]
ChunkSecondsOption = Annotated[
    float,
    typer.Option(
        "--chunk-seconds",
        min=0.1,
        help="Length of the pieces long files are processed in (memory grows with it).",
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto, fp32, bf16 or fp16. auto uses bf16 where the hardware runs it natively.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed of the decoder's noise: same seed, same audio.")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no summary (errors still show).")
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print a machine-readable summary (JSON) on stdout, or on stderr when stdout "
        "carries data.",
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
SkipExistingOption = Annotated[
    bool,
    typer.Option("--skip-existing", help="Leave existing outputs alone (resume a batch)."),
]
SampleRateOption = Annotated[
    int | None,
    typer.Option(
        "--sample-rate",
        "-r",
        min=1,
        help="Output sample rate. Default: the original audio's.",
        show_default=False,
    ),
]
SubtypeOption = Annotated[
    str | None,
    typer.Option(
        "--subtype",
        help="Sample format, e.g. PCM_16, PCM_24, FLOAT. Default: the container's usual one.",
        show_default=False,
    ),
]
NormalizeOption = Annotated[
    bool,
    typer.Option("--normalize", help="Scale the decoded audio so its peak is at -1 dBFS."),
]
LimitOption = Annotated[
    bool,
    typer.Option("--limit", help="Soft-limit decoded peaks above 0.9 instead of clipping."),
]
DtypeOption = Annotated[
    str, typer.Option("--dtype", help="How a .lat output stores latents: float16 or float32.")
]


def check_dtype(dtype: str) -> None:
    """Reject a ``--dtype`` that .lat files cannot store."""
    if dtype not in ("float16", "float32"):
        raise LincaeError(f"--dtype must be float16 or float32, not {dtype!r}")


# -- option groups ----------------------------------------------------------------------------
# Options that always travel together are declared once, as the fields of a frozen dataclass;
# `with_option_groups` spreads them into the signature of each command that takes the group.


@dataclass(frozen=True)
class EngineArgs:
    """The inference options (model, device, batching, precision, seed), as given."""

    model: ModelOption = None
    device: DeviceOption = "auto"
    batch_size: BatchSizeOption = None
    chunk_seconds: ChunkSecondsOption = 10.0
    precision: PrecisionOption = "auto"
    seed: SeedOption = 0

    def options(self) -> Any:
        from lincae_cli.engine.runner import EngineOptions

        return EngineOptions(
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            chunk_seconds=self.chunk_seconds,
            seed=self.seed,
        )


@dataclass(frozen=True)
class AudioOutputArgs:
    """How decoded audio is written: sample rate, sample format, peak handling."""

    sample_rate: SampleRateOption = None
    subtype: SubtypeOption = None
    normalize: NormalizeOption = False
    limit: LimitOption = False

    def options(self) -> Any:
        from lincae_cli.engine.streams import OutputOptions

        subtype = self.subtype.upper() if self.subtype is not None else None
        return OutputOptions(
            sample_rate=self.sample_rate,
            subtype=subtype,
            normalize=self.normalize,
            limit=self.limit,
        )


@dataclass(frozen=True)
class FileBatchArgs:
    """What a file-per-file command (encode, decode) does with outputs that exist already,
    and how it reports."""

    skip_existing: SkipExistingOption = False
    force: ForceOption = False
    quiet: QuietOption = False
    json_output: JsonOption = False

    def reporter(self, command: str, args: Sequence[str], output: str | None) -> Reporter:
        """The command's reporter: its JSON goes to stderr when stdout is written (``-o -``,
        or stdin's output by default)."""
        stdout_busy = output == STDIO or (output is None and STDIO in args)
        return Reporter(command, self.quiet, self.json_output, stdout_busy)


def with_option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` as Typer should see it, with its option groups spread out.

    A parameter annotated with an option group (a dataclass whose fields are Typer options or
    groups themselves) becomes the group's options, in field order and with the fields'
    defaults, where the parameter stands; ``command`` still receives one group instance.
    """
    signature = inspect.signature(command)
    hints = get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for parameter in signature.parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if _is_option_group(annotation):
            groups[parameter.name] = annotation
            parameters += _group_parameters(annotation, parameter.kind)
        else:
            parameters.append(parameter.replace(annotation=annotation))
    names = [parameter.name for parameter in parameters]
    if len(set(names)) != len(names):
        raise TypeError(f"{command.__name__}: option groups repeat a parameter name: {names}")

    @functools.wraps(command)
    def run(**options: Any) -> None:
        for name, group in groups.items():
            options[name] = _build_group(group, options)
        command(**options)

    # Typer reads the parameters from `__signature__` (which `inspect.signature` prefers).
    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run


def _is_option_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


@functools.cache
def _group_hints(group: type) -> dict[str, Any]:
    return get_type_hints(group, include_extras=True)


def _group_parameters(group: type, kind: Any) -> list[inspect.Parameter]:
    parameters: list[inspect.Parameter] = []
    for group_field in dataclasses.fields(group):
        hint = _group_hints(group)[group_field.name]
        if _is_option_group(hint):
            parameters += _group_parameters(hint, kind)
            continue
        default = inspect.Parameter.empty
        if group_field.default is not dataclasses.MISSING:
            default = group_field.default
        parameters.append(
            inspect.Parameter(group_field.name, kind, default=default, annotation=hint)
        )
    return parameters


def _build_group(group: type, options: dict[str, Any]) -> Any:
    """An instance of ``group`` from (and taking out of) the flat ``options``."""
    values = {}
    for group_field in dataclasses.fields(group):
        hint = _group_hints(group)[group_field.name]
        if _is_option_group(hint):
            values[group_field.name] = _build_group(hint, options)
        else:
            values[group_field.name] = options.pop(group_field.name)
    return group(**values)


def make_progress(verb: str, quiet: bool) -> Any:
    """Rich progress bars on stderr when it is a terminal and not ``--quiet``; else None."""
    if quiet or not sys.stderr.isatty():
        return None
    from lincae_cli.engine.progress import RichProgress

    return RichProgress(verb)


def run_jobs(
    engine: Any,
    jobs: Sequence[tuple[Task, Any]],
    verb: str,
    reporter: Reporter,
    finish: Callable[[Task, Any], None],
) -> None:
    """Run the engine ``jobs``, each paired with its task, reporting the ones that fail;
    ``finish(task, outcome)`` handles each success as it ends. Leaving early (an exception,
    Ctrl-C) aborts the unfinished jobs, so no partial output is left behind."""
    task_of = {id(job): task for task, job in jobs}
    progress = make_progress(verb, reporter.quiet)
    with contextlib.closing(engine.run([job for _, job in jobs], progress)) as outcomes:
        for outcome in outcomes:
            task = task_of[id(outcome.job)]
            if outcome.error is not None:
                reporter.failed(task.input.name, str(outcome.error))
                continue
            finish(task, outcome)


# -- inputs -----------------------------------------------------------------------------------


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
        return "<stdin>" if self.path is None else str(self.path)

    @property
    def arg(self) -> str:
        return STDIO if self.path is None else str(self.path)


def audio_suffixes() -> frozenset[str]:
    from lincae_cli.audio.io import AUDIO_EXTENSIONS

    return frozenset(AUDIO_EXTENSIONS)


def expand_inputs(
    args: Sequence[str], suffixes: Collection[str], kind: str
) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Files named by ``args``: files as given, folders searched recursively for ``suffixes``,
    glob patterns expanded, ``-`` for stdin. Returns (inputs, failures as (name, message))."""
    inputs: list[InputFile] = []
    failures: list[tuple[str, str]] = []
    stdin_seen = False
    for arg in args:
        if arg == STDIO:
            if stdin_seen:
                failures.append(("<stdin>", "<stdin>: given more than once"))
            stdin_seen = True
            inputs.append(InputFile(None))
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            found = _folder_files(path, suffixes)
            if not found:
                failures.append((arg, f"{arg}: no {kind} files found in this folder"))
            inputs.extend(InputFile(file, file.relative_to(path)) for file in found)
        elif path.exists():
            inputs.append(InputFile(path))
        elif not _GLOB_CHARACTERS & set(arg):
            # Reported before any model loads: a typo should fail in milliseconds.
            failures.append((arg, f"{arg}: no such file"))
        else:
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            files = [Path(match) for match in matches if Path(match).is_file()]
            if not files:
                failures.append((arg, f"{arg}: no file matches this pattern"))
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
    if any(item.is_stdin for item in inputs):
        return sys.stdin.buffer.read()
    return None


# -- outputs ----------------------------------------------------------------------------------


@dataclass
class Task:
    """One input and where its output goes (a path, or ``-`` for stdout)."""

    input: InputFile
    output: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def to_stdout(self) -> bool:
        return self.output == STDIO


def plan_outputs(
    inputs: Sequence[InputFile],
    output: str | None,
    suffix_for: Any,
    is_output_file: Any,
    reporter: Reporter,
) -> list[Task]:
    """Pair every input with its output path.

    Without ``-o``: beside the input, with ``suffix_for(input)``; stdin goes to stdout.
    ``-o -``: stdout (a single input only). ``-o FILE`` (one input, ``is_output_file(FILE)``):
    that file. Otherwise ``-o`` is a folder: folder arguments are mirrored inside it, other
    files land at its top.
    """
    if output == STDIO:
        if len(inputs) != 1:
            raise LincaeError(f"-o - writes to stdout, which takes one input, not {len(inputs)}")
        return [Task(inputs[0], STDIO)]
    tasks: list[Task] = []
    folder_mode = output is not None and (
        len(inputs) > 1
        or any(item.relative is not None for item in inputs)
        or Path(output).is_dir()
        or output.endswith(("/", os.sep))
        or not is_output_file(output)
    )
    seen: dict[str, str] = {}
    for item in inputs:
        suffix = suffix_for(item)
        if output is None:
            target = STDIO if item.is_stdin else str(item.path.with_suffix(suffix))  # type: ignore[union-attr]
        elif not folder_mode:
            target = output
        elif item.is_stdin:
            reporter.failed(item.name, "<stdin>: give -o FILE (or -o -) for audio read from stdin")
            continue
        else:
            assert item.path is not None
            relative = item.relative if item.relative is not None else Path(item.path.name)
            target = str(Path(output) / relative.with_suffix(suffix))
        if target != STDIO:
            if target in seen:
                reporter.failed(
                    item.name, f"{item.name}: output {target} is also the output of {seen[target]}"
                )
                continue
            seen[target] = item.name
        tasks.append(Task(item, target, {"folder_mode": folder_mode}))
    return tasks


def select_runnable(
    tasks: Sequence[Task], force: bool, skip_existing: bool, reporter: Reporter
) -> list[Task]:
    """Drop tasks whose output exists (skipped with ``--skip-existing``, an error without
    ``--force``) or cannot be written."""
    runnable = []
    for task in tasks:
        if task.to_stdout:
            runnable.append(task)
            continue
        target = Path(task.output)
        if task.input.path is not None and _same_file(task.input.path, target):
            reporter.failed(task.input.name, f"{target}: output would overwrite its own input")
            continue
        if target.exists() and not force:
            if skip_existing:
                reporter.skipped(task)
                continue
            reporter.failed(
                task.input.name,
                f"{target}: already exists (use --force to overwrite, --skip-existing to keep it)",
            )
            continue
        if target.is_dir():
            reporter.failed(task.input.name, f"{target}: is a directory")
            continue
        problem = unwritable_reason(target, create_parents=task.extra.get("folder_mode", False))
        if problem:
            reporter.failed(task.input.name, f"{target}: {problem}")
            continue
        runnable.append(task)
    return runnable


def plan_tasks(
    args: Sequence[str],
    output: str | None,
    *,
    suffixes: Collection[str],
    kind: str,
    suffix_for: Callable[[InputFile], str],
    is_output_file: Callable[[str], bool],
    batch: FileBatchArgs,
    reporter: Reporter,
) -> tuple[list[Task], ShardInfo]:
    """The tasks of a file-per-file command (encode, decode) that this process runs.

    ``args`` are expanded (`expand_inputs`), paired with outputs (`plan_outputs`), shared
    among torchrun's processes by file size, and filtered by `select_runnable`; every input
    dropped on the way is reported. Returns the tasks and this process's shard.
    """
    from lincae_cli.engine.shard import shard_info, shard_items

    shard = shard_info()
    files, failures = expand_inputs(args, suffixes, kind)
    for name, message in failures:
        reporter.failed(name, message)
    tasks = plan_outputs(files, output, suffix_for, is_output_file, reporter)
    tasks = shard_items(tasks, [_input_bytes(task.input) for task in tasks], shard)
    if shard.is_distributed:
        reporter.extra.update(rank=shard.rank, world_size=shard.world_size)
    return select_runnable(tasks, batch.force, batch.skip_existing, reporter), shard


def _input_bytes(item: InputFile) -> float:
    try:
        return float(item.path.stat().st_size) if item.path is not None else 0.0
    except OSError:
        return 0.0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and a.samefile(b)
    except OSError:
        return False


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


def prepare_parent(task: Task) -> None:
    """Create the output's folder when ``-o`` named a folder (mirrored subfolders)."""
    if task.to_stdout or not task.extra.get("folder_mode"):
        return
    try:
        Path(task.output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LincaeError(f"{task.output}: cannot create its folder ({error.strerror})") from None


def check_single_output(output: str, force: bool) -> None:
    """For commands with one output (mix, gain, subtract): refuse to clobber or fail late."""
    if output == STDIO:
        return
    target = Path(output)
    if target.is_dir():
        raise LincaeError(f"{target}: is a directory; give an output file name")
    if target.exists() and not force:
        raise LincaeError(f"{target}: already exists (use --force to overwrite)")
    problem = unwritable_reason(target, create_parents=False)
    if problem:
        raise LincaeError(f"{target}: {problem}")


# -- reporting --------------------------------------------------------------------------------


def error_line(message: str) -> None:
    typer.echo(f"lincae: error: {message}", err=True)


def warning_line(message: str) -> None:
    typer.echo(f"lincae: warning: {message}", err=True)


class Reporter:
    """Collects what happened to every input; prints errors as they happen and a summary."""

    def __init__(self, command: str, quiet: bool, json_output: bool, stdout_busy: bool) -> None:
        self.command = command
        self.quiet = quiet
        self.json_output = json_output
        self.stdout_busy = stdout_busy
        self.records: list[dict[str, Any]] = []
        self.audio_seconds = 0.0
        self._started = time.perf_counter()
        self.extra: dict[str, Any] = {}

    def ok(self, task: Task, **fields: Any) -> None:
        self.audio_seconds += float(fields.get("duration_seconds", 0.0))
        self.records.append(
            {"input": task.input.name, "output": _shown(task.output), "status": "ok", **fields}
        )

    def skipped(self, task: Task) -> None:
        self.records.append({"input": task.input.name, "output": task.output, "status": "skipped"})

    def failed(self, name: str, message: str) -> None:
        error_line(message)
        self.records.append({"input": name, "status": "failed", "error": message})

    def warn(self, message: str) -> None:
        warning_line(message)

    def count(self, status: str) -> int:
        return sum(1 for record in self.records if record["status"] == status)

    def finish(self) -> int:
        """Print the summary; the exit code (1 if anything failed)."""
        wall = time.perf_counter() - self._started
        failed = self.count("failed")
        done, skipped = self.count("ok"), self.count("skipped")
        speed = self.audio_seconds / wall if wall > 0 else 0.0
        if failed:
            names = ", ".join(r["input"] for r in self.records if r["status"] == "failed")
            typer.echo(
                f"lincae: {self.command}: {failed} of {len(self.records)} failed: {names}",
                err=True,
            )
        elif not self.quiet and len(self.records) > 1:
            typer.echo(
                f"lincae: {self.command}: {done} done, {skipped} skipped, "
                f"{self.audio_seconds:.1f} s of audio in {wall:.1f} s ({speed:.1f}x realtime)",
                err=True,
            )
        if self.json_output:
            summary = {
                "command": self.command,
                "ok": done,
                "skipped": skipped,
                "failed": failed,
                "audio_seconds": round(self.audio_seconds, 3),
                "wall_seconds": round(wall, 3),
                "x_realtime": round(speed, 2),
                **self.extra,
                "files": self.records,
            }
            print_json(summary, to_stderr=self.stdout_busy)
        return 1 if failed else 0


def print_json(document: Any, to_stderr: bool = False) -> None:
    text = json.dumps(document, indent=2, allow_nan=False, default=str)
    typer.echo(text, err=to_stderr)


def _shown(output: str) -> str:
    return "<stdout>" if output == STDIO else output


def lat_suffix(_: InputFile) -> str:
    return LAT_SUFFIX


def is_lat_output(output: str) -> bool:
    return Path(output).suffix.lower() == LAT_SUFFIX
