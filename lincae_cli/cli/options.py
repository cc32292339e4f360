"""Options shared by several commands, and option groups: options that travel together,
declared once as the fields of a frozen dataclass and spread into each command's signature by
`with_option_groups`. The command classes (help, ``-V``) are in commands.py.

Nothing here imports torch: `lincae --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from lincae_cli.engine.chunks import DEFAULT_CHUNK_SECONDS
from lincae_cli.errors import LincaeError
from lincae_cli.paths import STDIO

if TYPE_CHECKING:
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.batch.files import Inference
    from lincae_cli.cli.render import Reporter
    from lincae_cli.engine.options import EngineOptions

# -- options shared by several commands -------------------------------------------------------


def inputs_argument(files: str) -> Any:
    """The INPUTS of a file-per-file command (see `expand_inputs`); ``files``: "Audio files"."""
    return typer.Argument(
        metavar="INPUTS...",
        help=f"{files}, folders (searched recursively), glob patterns, or - for stdin.",
        show_default=False,
    )


def output_option(help_text: str) -> Any:
    """``--output``/``-o``; ``help_text`` says what the command writes there."""
    return typer.Option("--output", "-o", metavar="PATH", help=help_text, show_default=False)


def refuse_terminal_stdout(writes_stdout: bool) -> None:
    """Before any work: like gzip, never write binary data (latents, WAV) onto a terminal."""
    if writes_stdout and sys.stdout.isatty():
        raise LincaeError("refusing to write binary data to a terminal (use -o FILE or a pipe)")


def writes_stdout(args: Sequence[str], output: str | None, null_output: bool = False) -> bool:
    """Whether a file-per-file command writes on stdout: ``-o -``, or stdin's output by
    default (never with ``-n``)."""
    return not null_output and (output == STDIO or (output is None and STDIO in args))


def check_null_output(null_output: bool, output: str | None) -> None:
    """``-n`` (write nothing) and ``-o`` both say where the output goes: only one may be
    given."""
    if null_output and output is not None:
        from lincae_cli.cli.render import UsageError

        raise UsageError(f"-n writes nothing, so -o {output} cannot be given with it")


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Model: a name from `lincae models`, hf://owner/repo/file.safetensors[@rev], or a "
        ".safetensors path. Default: for encoding, $LINCAE_MODEL, else lincae-small; for "
        "decoding, the model recorded in the .lat file.",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device", metavar="DEVICE", help="auto, cpu, cuda (or cuda:N) or mps. auto prefers a GPU."
    ),
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        metavar="N",
        help="Chunks per forward pass, taken from as many files as needed. "
        "Default: 1 on CPU (a chunk already uses every core); on a CUDA GPU as many as fit "
        "in half its free memory, at most 16.",
        show_default=False,
    ),
]
ChunkSecondsOption = Annotated[
    float | None,
    typer.Option(
        "--chunk-seconds",
        min=0.1,
        metavar="SECONDS",
        help=(
            "Length of the pieces long files are processed in (memory grows with it). "
            f"Default {DEFAULT_CHUNK_SECONDS:g}, shorter on a CPU where a window would take "
            "the process past 2 GB (the published size at fp32)."
        ),
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="PRECISION",
        help="auto, fp32, bf16 or fp16. auto uses bf16 where the hardware runs it natively, "
        "fp16 on CUDA GPUs without it, else fp32.",
    ),
]
SeedOption = Annotated[
    int,
    typer.Option("--seed", metavar="N", help="Seed of the decoder's noise: same seed, same audio."),
]
NULL_OUTPUT_KEY = "lincae.null_output"  # in the context's meta, shared by the app and commands


def _null_output(ctx: typer.Context, value: bool) -> bool:
    """``lincae -n decode ...`` counts as ``lincae decode ... -n``."""
    value = bool(value or ctx.meta.get(NULL_OUTPUT_KEY))
    ctx.meta[NULL_OUTPUT_KEY] = value
    return value


NullOutputOption = Annotated[
    bool,
    typer.Option(
        "--null",
        "-n",
        callback=_null_output,
        help="Null output, as sox's -n: do the work and report it, write no file (decode "
        "decodes in memory; operations on latents decode nothing). Also before the command.",
    ),
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
        metavar="HZ",
        help="Output sample rate. Default: the original audio's.",
        show_default=False,
    ),
]
SubtypeOption = Annotated[
    str | None,
    typer.Option(
        "--subtype",
        metavar="SUBTYPE",
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
RestoreLoudnessOption = Annotated[
    bool | None,
    typer.Option(
        "--restore-loudness/--no-restore-loudness",
        help="Bring the decoded audio to the loudness its .lat records (measured at encoding, "
        "moved by gain and --lufs); --no-restore-loudness keeps the level the model decodes "
        "at. Default: the model's (`lincae info` says which applies). Latents of unknown "
        "loudness (mixes, trims, fades) are left alone; --normalize replaces it.",
        show_default=False,
    ),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        metavar="DTYPE",
        help="How a .lat or .npy output stores latents: float16 or float32.",
    ),
]


# -- option groups ----------------------------------------------------------------------------
# Options that always travel together are declared once, as the fields of a frozen dataclass;
# `with_option_groups` spreads them into the signature of each command that takes the group.


@dataclass(frozen=True)
class EngineArgs:
    """The inference options (model, device, batching, precision), as given. Encoding is
    deterministic: commands that decode take `DecodeEngineArgs`, with the noise's seed."""

    model: ModelOption = None
    device: DeviceOption = "auto"
    batch_size: BatchSizeOption = None
    chunk_seconds: ChunkSecondsOption = None
    precision: PrecisionOption = "auto"

    def options(self) -> EngineOptions:
        from lincae_cli.engine.options import EngineOptions

        return EngineOptions(
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            chunk_seconds=self.chunk_seconds,
            seed=self.decoding_seed(),
        )

    def decoding_seed(self) -> int:
        return 0

    def inference(self, reporter: Reporter, verb: str) -> Inference:
        """The batch layer's inference settings, with progress bars when ``reporter`` shows
        them."""
        from lincae_cli.batch.files import Inference

        return Inference(self.model, self.options(), reporter.progress(verb))


@dataclass(frozen=True)
class DecodeEngineArgs(EngineArgs):
    """The inference options of a command that may decode: `EngineArgs` and ``--seed``."""

    seed: SeedOption = 0

    def decoding_seed(self) -> int:
        return self.seed


@dataclass(frozen=True)
class AudioOutputArgs:
    """How decoded audio is written: sample rate, sample format, peak handling."""

    sample_rate: SampleRateOption = None
    subtype: SubtypeOption = None
    normalize: NormalizeOption = False
    limit: LimitOption = False
    restore_loudness: RestoreLoudnessOption = None

    def given(self) -> list[str]:
        """The options given that differ from their defaults, as typed (``--normalize``)."""
        names = {
            "sample_rate": "--sample-rate",
            "subtype": "--subtype",
            "restore_loudness": f"--{'' if self.restore_loudness else 'no-'}restore-loudness",
        }
        return [
            names.get(field.name, f"--{field.name}")
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        ]

    def options(self) -> OutputOptions:
        from lincae_cli.audio.sink import OutputOptions

        subtype = self.subtype.upper() if self.subtype is not None else None
        return OutputOptions(
            sample_rate=self.sample_rate,
            subtype=subtype,
            normalize=self.normalize,
            limit=self.limit,
            restore_loudness=self.restore_loudness,
        )


@dataclass(frozen=True)
class FileBatchArgs:
    """What a file-per-file command (encode, decode) does with outputs that exist already,
    and how it reports."""

    skip_existing: SkipExistingOption = False
    force: ForceOption = False
    null_output: NullOutputOption = False
    quiet: QuietOption = False
    json_output: JsonOption = False

    def check(self, args: Sequence[str], output: str | None) -> None:
        """Before any work: ``-n`` without ``-o``, no binary data onto a terminal."""
        check_null_output(self.null_output, output)
        refuse_terminal_stdout(writes_stdout(args, output, self.null_output))

    def reporter(self, command: str, args: Sequence[str], output: str | None) -> Reporter:
        """The command's reporter: its JSON goes to stderr when stdout is written (``-o -``,
        or stdin's output by default)."""
        from lincae_cli.cli.render import Reporter

        stdout_busy = writes_stdout(args, output, self.null_output)
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
