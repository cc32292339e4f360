"""`lincae mix`, `lincae gain`, `lincae subtract`: arithmetic on latents, no decoding needed.

An output ending in .lat (or ``-``, stdout) is a latent file; an audio extension decodes the
result with the model that made the inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lincae_cli.cli.common import (
    LAT_SUFFIX,
    STDIO,
    AudioOutputArgs,
    DtypeOption,
    EngineArgs,
    ForceOption,
    InputFile,
    JsonOption,
    QuietOption,
    Reporter,
    Task,
    audio_suffixes,
    check_dtype,
    check_single_output,
    output_option,
    with_option_groups,
)
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.latents.latfile import LatentFile

OutputArgument = Annotated[
    str, output_option("Result: a .lat file, - for a .lat on stdout, or an audio file (decodes).")
]
PadOption = Annotated[
    bool,
    typer.Option("--pad", help="Allow inputs of different lengths (shorter ones get silence)."),
]


@dataclass(frozen=True)
class ResultArgs:
    """How an operation writes its one result: the options after the operation's own."""

    force: ForceOption = False
    dtype: DtypeOption = "float16"
    audio: AudioOutputArgs = AudioOutputArgs()
    engine: EngineArgs = EngineArgs()
    quiet: QuietOption = False
    json_output: JsonOption = False


MIX_HELP = """Mix latent files: the sum of their latents, with optional per-input gains.

Gains are decibels (-6dB) or linear factors (0.5), comma-separated, one per input. \
Inputs must come from the same model and have the same length (or use --pad).

Examples:

  lincae mix vocals.lat drums.lat bass.lat -o band.lat

  lincae mix vocals.lat backing.lat --gains 0dB,-6dB -o mix.wav

  lincae mix intro.lat song.lat --pad -o joined-in-time.lat
"""

GAIN_HELP = """Scale a latent file: -6dB, +3dB, 0.5 (linear), -1 (polarity flip).

With --lufs TARGET the gain is the one that brings the source's integrated loudness \
(measured when it was encoded) to TARGET LUFS, computed without decoding; the new loudness is \
recorded as an estimate.

Examples:

  lincae gain song.lat -6dB -o quieter.lat

  lincae gain song.lat --lufs -14 -o streaming.wav

  lincae encode song.wav -o - | lincae gain - 0.5 -o - | lincae decode - -o half.wav
"""

SUBTRACT_HELP = """Subtract latent files from a mix: MIX - A - B - ...

Examples:

  lincae subtract mix.lat accompaniment.lat -o vocals.wav

  lincae subtract band.lat drums.lat bass.lat -o rest.lat
"""


@with_option_groups
def mix(
    inputs: Annotated[
        list[str], typer.Argument(help="Two or more .lat files (- for stdin).", show_default=False)
    ],
    output: OutputArgument,
    gains: Annotated[
        str | None,
        typer.Option(
            "--gains",
            help="Comma-separated gain per input, e.g. 1,0.5 or 0dB,-6dB.",
            show_default=False,
        ),
    ] = None,
    pad: PadOption = False,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if len(inputs) < 2:
        raise LincaeError("mix needs at least two input files")
    gains_linear = None
    if gains is not None:
        parts = gains.split(",")
        if len(parts) != len(inputs):
            raise LincaeError(f"--gains has {len(parts)} values for {len(inputs)} inputs")
        gains_linear = [ops.parse_gain(part) for part in parts]
    destination = Destination("mix", output, result_args)
    files, names = read_inputs(inputs)
    destination.write(ops.mix(files, gains_linear, pad=pad, names=names), names)


@with_option_groups
def gain(
    input_file: Annotated[str, typer.Argument(metavar="IN", help=".lat file (- for stdin).")],
    output: OutputArgument,
    gain_text: Annotated[
        str | None,
        typer.Argument(
            metavar="GAIN", help="-6dB, +3dB, 0.5, ... (omit with --lufs).", show_default=False
        ),
    ] = None,
    lufs: Annotated[
        float | None,
        typer.Option(
            "--lufs",
            help="Target integrated loudness in LUFS, instead of GAIN.",
            show_default=False,
        ),
    ] = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if (gain_text is None) == (lufs is None):
        raise LincaeError("give either a GAIN (like -6dB or 0.5) or --lufs TARGET, not both")
    factor = None if gain_text is None else ops.parse_gain(gain_text)
    destination = Destination("gain", output, result_args)
    (source,), names = read_inputs([input_file])
    if lufs is not None:
        loudness = source.meta.source_loudness_lufs
        if loudness is None:
            raise LincaeError(
                f"{names[0]}: no recorded loudness (silent, shorter than 0.4 s, or a mix of "
                f"several inputs), so --lufs cannot be used; give a GAIN instead"
            )
        factor = ops.gain_for_target_lufs(loudness, lufs)
    assert factor is not None
    result = ops.gain(source, factor)
    if lufs is not None:
        # Record what was asked for alongside the gain that achieves it.
        last = {**result.meta.provenance[-1], "target_lufs": lufs}
        meta = dataclasses.replace(result.meta, provenance=[*result.meta.provenance[:-1], last])
        result = dataclasses.replace(result, meta=meta)
    gain_db = None if factor == 0 else 20 * math.log10(abs(factor))
    destination.write(result, names, gain_linear=factor, gain_db=gain_db)


@with_option_groups
def subtract(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="MIX OTHER...",
            help="The mix, then the .lat files to take out of it (- for stdin).",
            show_default=False,
        ),
    ],
    output: OutputArgument,
    pad: PadOption = False,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if len(inputs) < 2:
        raise LincaeError("subtract needs a mix and at least one file to take out of it")
    destination = Destination("subtract", output, result_args)
    files, names = read_inputs(inputs)
    destination.write(ops.subtract(files[0], files[1:], pad=pad, names=names), names)


def read_inputs(args: list[str]) -> tuple[list[LatentFile], list[str]]:
    """The latent files named by ``args`` (``-`` is stdin, once), and their display names."""
    from lincae_cli.latents.latfile import read_lat

    if args.count(STDIO) > 1:
        raise LincaeError("- (stdin) can be given only once")
    for arg in args:
        if arg != STDIO and Path(arg).suffix.lower() in audio_suffixes():
            raise LincaeError(
                f"{arg}: is audio, not a .lat file; encode it first with `lincae encode`"
            )
    names = ["<stdin>" if arg == STDIO else arg for arg in args]
    return [read_lat(arg) for arg in args], names


@dataclass(frozen=True)
class Destination:
    """Where a command's one result goes: a .lat (path or stdout), or audio (decoded).

    Built before any work so that a bad or existing output fails fast.
    """

    command: str
    output: str
    args: ResultArgs

    def __post_init__(self) -> None:
        check_dtype(self.args.dtype)
        if not (self.writes_latents or self.writes_audio):
            suffix = Path(self.output).suffix
            raise LincaeError(
                f"{self.output}: unknown output type {suffix!r}; use .lat, or an audio extension "
                f"({', '.join(sorted(audio_suffixes()))})"
            )
        check_single_output(self.output, self.args.force)

    @property
    def writes_latents(self) -> bool:
        return self.output == STDIO or Path(self.output).suffix.lower() == LAT_SUFFIX

    @property
    def writes_audio(self) -> bool:
        return Path(self.output).suffix.lower() in audio_suffixes()

    def write(self, result: LatentFile, names: list[str], **fields: object) -> None:
        """Write (or decode) ``result``, print the summary and exit with its code."""
        from lincae_cli.latents.latfile import write_lat

        args = self.args
        reporter = Reporter(self.command, args.quiet, args.json_output, self.output == STDIO)
        task = Task(InputFile(Path(self.command)), self.output)
        if self.writes_latents:
            write_lat(self.output, result, dtype=args.dtype)
            reporter.ok(task, duration_seconds=round(result.meta.duration_seconds, 6))
        else:
            from lincae_cli.cli.decode import decode_latent_files, decoding_model_for

            spec = args.engine.model or decoding_model_for(result, self.output)
            decode_latent_files([(task, result)], spec, args.engine, args.audio.options(), reporter)
        reporter.records[-1].update(
            inputs=names,
            frames=result.frames,
            channels=result.channels,
            loudness_lufs=result.meta.source_loudness_lufs,
            loudness_is_estimate=result.meta.loudness_is_estimate,
            **fields,
        )
        raise typer.Exit(reporter.finish())
