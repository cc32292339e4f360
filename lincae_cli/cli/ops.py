"""`lincae mix`, `lincae gain`, `lincae subtract`: arithmetic on latents, no decoding needed.

An output ending in .lat (or ``-``, stdout) is a latent file; an audio extension decodes the
result with the model that made the inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from lincae_cli.cli.options import (
    AudioOutputArgs,
    DtypeOption,
    EngineArgs,
    ForceOption,
    JsonOption,
    QuietOption,
    output_option,
    refuse_terminal_stdout,
    with_option_groups,
)
from lincae_cli.cli.render import UsageError
from lincae_cli.errors import LincaeError
from lincae_cli.paths import STDIN_NAME, STDIO, is_lat_path, is_stdio

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

    def check(self, output: str) -> None:
        """Before reading any input: ``output`` can be written with these options."""
        from lincae_cli.batch.files import check_result_output

        refuse_terminal_stdout(is_stdio(output))
        check_result_output(output, self.dtype, self.force)
        audio_options = self.audio.given()
        if audio_options and (is_stdio(output) or is_lat_path(output)):
            raise LincaeError(
                f"{', '.join(audio_options)} only apply when decoding to audio; {output} is "
                "latents (name an audio file, e.g. out.wav, to decode)"
            )

    def write(
        self, command: str, result: LatentFile, output: str, names: list[str], **fields: object
    ) -> None:
        """Write (or decode) ``result``, print the summary and exit with its code."""
        from lincae_cli.batch.files import save_result
        from lincae_cli.cli.render import Reporter

        reporter = Reporter(command, self.quiet, self.json_output, is_stdio(output))
        meta = result.meta
        save_result(
            result,
            output,
            reporter.result,
            dtype=self.dtype,
            inference=self.engine.inference(reporter, "decoding"),
            audio=self.audio.options(),
            fields={
                "inputs": names,
                "frames": result.frames,
                "channels": result.channels,
                "loudness_lufs": meta.source_loudness_lufs,
                "loudness_is_estimate": meta.loudness_is_estimate,
                **fields,
            },
        )
        raise typer.Exit(reporter.finish())


MIX_HELP = """Mix latent files: the sum of their latents, with optional per-input gains.

Gains are comma-separated, one per input: a number is decibels (-6 or -6dB, -inf mutes), \
x before a number makes it a linear factor (x0.5; x-1 inverts polarity). Inputs must come \
from the same model and have the same length (or use --pad).

Examples:

  lincae mix vocals.lat drums.lat bass.lat -o band.lat

  lincae mix vocals.lat backing.lat --gains 0dB,-6dB -o mix.wav

  lincae mix intro.lat song.lat --pad -o joined-in-time.lat
"""

GAIN_HELP = """Scale a latent file by GAIN in decibels, as sox's gain: -6 (or -6dB), +3, \
-inf (silence); x before a number makes it a linear factor: x0.5, x-1 (polarity flip).

With --lufs TARGET the gain is the one that brings the source's integrated loudness \
(measured when it was encoded) to TARGET LUFS, computed without decoding; the new loudness is \
recorded as an estimate.

Examples:

  lincae gain song.lat -6 -o quieter.lat

  lincae gain song.lat --lufs -14 -o streaming.wav

  lincae encode song.wav -o - | lincae gain - x0.5 -o - | lincae decode - -o half.wav
"""

SUBTRACT_HELP = """Subtract latent files from a mix: MIX - A - B - ...

Examples:

  lincae subtract mix.lat accompaniment.lat -o vocals.wav

  lincae subtract band.lat drums.lat bass.lat -o rest.lat
"""


@with_option_groups
def mix(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUTS...", help="Two or more .lat files (- for stdin).", show_default=False
        ),
    ],
    output: OutputArgument,
    gains: Annotated[
        str | None,
        typer.Option(
            "--gains",
            metavar="GAINS",
            help="Comma-separated gain per input: dB (0,-6 or 0dB,-6dB) or factors (x1,x0.5).",
            show_default=False,
        ),
    ] = None,
    pad: PadOption = False,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if len(inputs) < 2:
        raise UsageError("mix needs at least two input files")
    gains_linear = None
    if gains is not None:
        parts = gains.split(",")
        if len(parts) != len(inputs):
            raise LincaeError(f"--gains has {len(parts)} values for {len(inputs)} inputs")
        gains_linear = [ops.parse_gain(part) for part in parts]
    result_args.check(output)
    files, names = read_inputs(inputs)
    result_args.write("mix", ops.mix(files, gains_linear, pad=pad, names=names), output, names)


@with_option_groups
def gain(
    input_file: Annotated[str, typer.Argument(metavar="IN", help=".lat file (- for stdin).")],
    output: OutputArgument,
    gain_text: Annotated[
        str | None,
        typer.Argument(
            metavar="GAIN",
            help="dB: -6, -6dB, +3, -inf; linear: x0.5, x-1 (omit with --lufs).",
            show_default=False,
        ),
    ] = None,
    lufs: Annotated[
        float | None,
        typer.Option(
            "--lufs",
            metavar="LUFS",
            help="Target integrated loudness in LUFS, instead of GAIN.",
            show_default=False,
        ),
    ] = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if (gain_text is None) == (lufs is None):
        raise LincaeError("give either a GAIN (like -6dB or x0.5) or --lufs TARGET, not both")
    factor = None if gain_text is None else ops.parse_gain(gain_text)
    result_args.check(output)
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
    result_args.write("gain", result, output, names, gain_linear=factor, gain_db=gain_db)


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
        raise UsageError("subtract needs a mix and at least one file to take out of it")
    result_args.check(output)
    files, names = read_inputs(inputs)
    result = ops.subtract(files[0], files[1:], pad=pad, names=names)
    result_args.write("subtract", result, output, names)


def read_inputs(args: list[str]) -> tuple[list[LatentFile], list[str]]:
    """The latent files named by ``args`` (``-`` is stdin, once), and their display names."""
    from lincae_cli.audio.io import is_audio_path
    from lincae_cli.latents.latfile import read_lat

    if args.count(STDIO) > 1:
        raise LincaeError("- (stdin) can be given only once")
    for arg in args:
        if not is_stdio(arg) and is_audio_path(arg):
            raise LincaeError(
                f"{arg}: is audio, not a .lat file; encode it first with `lincae encode`"
            )
    names = [STDIN_NAME if is_stdio(arg) else arg for arg in args]
    files = [read_lat(arg) for arg in args]
    if len(files) > 1:
        _warn_about_chunking(files, names)
    return files, names


def _warn_about_chunking(files: list[LatentFile], names: list[str]) -> None:
    from lincae_cli.cli.render import warning_line
    from lincae_cli.latents.ops import chunking_differs

    if chunking_differs(files):
        settings = ", ".join(
            f"{name}: {file.meta.chunking.get('chunk_seconds', '?')} s"
            for file, name in zip(files, names, strict=True)
        )
        warning_line(
            f"inputs were encoded with different chunk settings ({settings}); latents of files "
            "longer than a chunk differ slightly near chunk boundaries"
        )
