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
    DecodeEngineArgs,
    DtypeOption,
    ForceOption,
    JsonOption,
    NullOutputOption,
    QuietOption,
    check_null_output,
    output_option,
    refuse_terminal_stdout,
    with_option_groups,
)
from lincae_cli.cli.render import UsageError, json_to_stderr
from lincae_cli.errors import LincaeError
from lincae_cli.paths import STDIN_NAME, STDIO, is_latent_path, is_stdio

if TYPE_CHECKING:
    import numpy as np

    from lincae_cli.latents.latfile import LatentFile

OutputArgument = Annotated[
    str | None,
    output_option("Result: a .lat file, - for a .lat on stdout, or an audio file (decodes)."),
]
AffineOption = Annotated[
    bool | None,
    typer.Option(
        "--affine/--no-affine",
        help="Treat the encoder as affine, Enc(x) = L·x + b: silence is the model's silence "
        "latent b, and weighted sums add (1 - Σ weights)·b. Default: what the model recorded.",
        show_default=False,
    ),
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
    engine: DecodeEngineArgs = DecodeEngineArgs()
    null_output: NullOutputOption = False
    quiet: QuietOption = False
    json_output: JsonOption = False

    def check(self, output: str | None) -> None:
        """Before reading any input: ``output`` (None with ``-n``) can be written with these
        options."""
        from lincae_cli.batch.single import check_result_output

        check_null_output(self.null_output, output)
        if output is None and not self.null_output:
            raise UsageError("give -o OUT (.lat, - or an audio file to decode), or -n for none")
        if output is not None:
            refuse_terminal_stdout(is_stdio(output))
            json_to_stderr(is_stdio(output))  # where --json goes, should reading inputs fail
            check_result_output(output, self.dtype, self.force)
        audio_options = self.audio.given()
        latents = output is not None and is_latent_path(output)
        if audio_options and (output is None or is_stdio(output) or latents):
            written = f"{output} is latents" if output else "-n decodes nothing"
            raise LincaeError(
                f"{', '.join(audio_options)} only apply when decoding to audio; {written} "
                "(name an audio file, e.g. out.wav, to decode)"
            )

    def write(
        self,
        command: str,
        result: LatentFile,
        output: str | None,
        names: list[str],
        **fields: object,
    ) -> None:
        """Write (or decode, or with ``-n`` only report) ``result``, print the summary and exit
        with its code."""
        from lincae_cli.batch.single import save_result
        from lincae_cli.cli.render import Reporter

        stdout_busy = output is not None and is_stdio(output)
        reporter = Reporter(command, self.quiet, self.json_output, stdout_busy)
        meta = result.meta
        decodes = not (output is None or is_stdio(output) or is_latent_path(output))
        save_result(
            result,
            output,
            reporter.result,
            name=", ".join(names),
            dtype=self.dtype,
            inference=self.engine.inference(reporter, "decoding") if decodes else None,
            audio=self.audio.options() if decodes else None,
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

  lincae mix song.lat jingle.lat --pad -o song-with-jingle.lat    (jingle over the start)
"""

GAIN_HELP = """Scale a latent file by GAIN in decibels, as sox's gain: -6 (or -6dB), +3, \
-inf (silence); x before a number makes it a linear factor: x0.5, x-1 (polarity flip).

With --lufs TARGET the gain is the one that brings the source's integrated loudness \
(measured when it was encoded) to TARGET LUFS, computed without decoding; the new loudness is \
recorded as an estimate. Decoding lands on the recorded loudness where the model restores it \
(--restore-loudness; `lincae info` says whether it does by default).

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
    output: OutputArgument = None,
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
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIMES",
            help="Comma-separated start time per input (seconds or mm:ss); the output covers "
            "them all.",
            show_default=False,
        ),
    ] = None,
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops
    from lincae_cli.latents.timeline import parse_seconds

    need_two_inputs("mix", inputs)
    starts = None
    if at is not None:
        parts = at.split(",")
        if len(parts) != len(inputs):
            raise LincaeError(f"--at has {len(parts)} values for {len(inputs)} inputs")
        starts = [parse_seconds(part, "--at") for part in parts]
    gains_linear = None
    if gains is not None:
        parts = gains.split(",")
        if len(parts) != len(inputs):
            raise LincaeError(f"--gains has {len(parts)} values for {len(inputs)} inputs")
        gains_linear = [ops.parse_gain(part) for part in parts]
    result_args.check(output)
    files, names = read_inputs(inputs)
    positions = None
    if starts is not None:
        rates = {file.meta.source_sample_rate for file in files}
        rate = rates.pop() if len(rates) == 1 else files[0].meta.model_sample_rate
        positions = [round(start * rate) for start in starts]
    silence = silence_for(files[0], affine, names[0])
    result = ops.mix(files, gains_linear, pad, names, positions, silence)
    _warn_about_placement(result, positions, names)
    result_args.write("mix", result, output, names)


@with_option_groups
def gain(
    input_file: Annotated[str, typer.Argument(metavar="IN", help=".lat file (- for stdin).")],
    output: OutputArgument = None,
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
    envelope: Annotated[
        str | None,
        typer.Option(
            "--envelope",
            metavar="POINTS",
            help="A gain that changes in time, instead of GAIN: TIME:GAIN breakpoints, "
            "e.g. 0:0dB,5:-12dB,8:0dB (linear in dB between them, held outside).",
            show_default=False,
        ),
    ] = None,
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import edit, ops
    from lincae_cli.latents.timeline import parse_envelope

    if [gain_text, lufs, envelope].count(None) != 2:
        raise LincaeError("give one of a GAIN (like -6dB or x0.5), --lufs TARGET or --envelope")
    factor = None if gain_text is None else ops.parse_gain(gain_text)
    points = None if envelope is None else parse_envelope(envelope, ops.parse_gain_db)
    result_args.check(output)
    (source,), names = read_inputs([input_file])
    silence = silence_for(source, affine, names[0])
    if points is not None:
        result_args.write("gain", edit.envelope(source, points, silence), output, names)
        return
    if lufs is not None:
        loudness = source.meta.source_loudness_lufs
        if loudness is None:
            raise LincaeError(
                f"{names[0]}: no recorded loudness (silent, shorter than 0.4 s, or a mix of "
                f"several inputs), so --lufs cannot be used; give a GAIN instead"
            )
        factor = ops.gain_for_target_lufs(loudness, lufs)
    assert factor is not None
    result = ops.gain(source, factor, silence)
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
    output: OutputArgument = None,
    pad: PadOption = False,
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import ops

    if len(inputs) < 2:
        raise UsageError("subtract needs a mix and at least one file to take out of it")
    result_args.check(output)
    files, names = read_inputs(inputs)
    silence = silence_for(files[0], affine, names[0])
    result = ops.subtract(files[0], files[1:], pad=pad, names=names, silence=silence)
    result_args.write("subtract", result, output, names)


def silence_for(file: LatentFile, affine: bool | None, name: str) -> np.ndarray | None:
    """The silence latent ``b`` when the affine operations apply (``affine``, or by default
    what the file's model recorded), else None."""
    import numpy as np

    use = file.meta.affine_default if affine is None else affine
    if not use:
        return None
    if file.meta.silence_latent is None:
        if affine is None:
            return None
        raise LincaeError(
            f"{name}: no silence latent recorded (encoded by an older lincae); re-encode it "
            "to use --affine"
        )
    return np.asarray(file.meta.silence_latent, np.float32)


def need_two_inputs(command: str, inputs: list[str]) -> None:
    """Usage error unless ``inputs`` names two files at least (mix, concat)."""
    if len(inputs) < 2:
        raise UsageError(f"{command} needs at least two input files")


def read_inputs(args: list[str]) -> tuple[list[LatentFile], list[str]]:
    """The latent files named by ``args`` (``-`` is stdin, once), and their display names."""
    from lincae_cli.latents.latfile import read_lat

    if args.count(STDIO) > 1:
        raise LincaeError("- (stdin) can be given only once")
    for arg in args:
        if is_stdio(arg) or is_latent_path(arg):
            continue
        from lincae_cli.audio.io import is_audio_path  # the audio layer, for other names only

        if is_audio_path(arg):
            raise LincaeError(
                f"{arg}: is audio, not a .lat file; encode it first with `lincae encode`"
            )
    names = [STDIN_NAME if is_stdio(arg) else arg for arg in args]
    files = [read_lat(arg) for arg in args]
    if len(files) > 1:
        _warn_about_chunking(files, names)
    return files, names


def _warn_about_placement(
    result: LatentFile, positions: list[int] | None, names: list[str]
) -> None:
    """Say where inputs landed when it is not where they were asked to (the nearest frame)."""
    from lincae_cli.cli.render import warning_line

    if positions is None:
        return
    rate = result.meta.source_sample_rate
    landed = [entry.get("position_samples") for entry in result.meta.provenance[0]["inputs"]]
    for name, asked, at in zip(names, positions, landed, strict=True):
        if isinstance(at, int) and at != asked:
            warning_line(
                f"{name} starts at {at / rate:.3f} s, the latent frame nearest to "
                f"{asked / rate:.3f} s"
            )


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
