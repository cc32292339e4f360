"""`lincae trim`, `pad`, `fade`, `concat`: editing latent files in time, without decoding.

Like mix/gain/subtract, an output ending in .lat (or ``-``) is latents and an audio extension
decodes. Nothing here imports torch unless the output is audio.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lincae_cli.cli.ops import (
    AffineOption,
    OutputArgument,
    ResultArgs,
    need_two_inputs,
    read_inputs,
    silence_for,
)
from lincae_cli.cli.options import with_option_groups
from lincae_cli.cli.render import UsageError
from lincae_cli.errors import LincaeError

InputArgument = Annotated[str, typer.Argument(metavar="IN", help=".lat file (- for stdin).")]
TIME_HELP = "seconds (12.5), mm:ss.sss (1:02.5) or samples (441000s)"

TRIM_HELP = f"""Keep the part of a latent file from START to END, to the sample.

START and END are {TIME_HELP}; a leading - counts from the end (as in sox), and END \
written +LENGTH counts from START. END defaults to the end of the file. A cut inside a latent \
frame keeps the frame and records the offset, so the trimmed file decodes to exactly \
END - START samples, aligned with the original.

Examples:

  lincae trim song.lat 30 1:00 -o chorus.lat

  lincae trim song.lat -10 -o last-10-seconds.wav

  lincae trim song.lat 441000s +2.5 -o clip.lat
"""

PAD_HELP = """Add silence before and/or after a latent file.

Examples:

  lincae pad song.lat --start 2 -o later.lat

  lincae pad jingle.lat --end 0.5 --affine -o jingle-tail.lat
"""

FADE_HELP = """Fade a latent file in and/or out, per latent frame (93 ms at 44.1 kHz).

Shapes: linear, cosine (an S-curve), log (linear in dB over 60 dB).

Examples:

  lincae fade song.lat --in 2 --out 5 -o faded.lat

  lincae fade song.lat --out 3 --shape cosine -o faded.wav
"""

CONCAT_HELP = """Join latent files one after the other.

With --crossfade the next file starts that long before the previous ends, the two blended \
linearly; without, each seam is a cut, blended over the latent frame that holds it. Inputs \
must come from the same model and have the same channels; files at different sample rates \
need --rate. A file lands on the nearest latent frame: the output's length is within half a \
frame (46 ms at 44.1 kHz) of the sum.

Examples:

  lincae concat intro.lat verse.lat chorus.lat -o song.lat

  lincae concat a.lat b.lat --crossfade 2 -o ab.wav
"""


@with_option_groups
def trim(
    input_file: InputArgument,
    start: Annotated[str, typer.Argument(metavar="START", help=f"Start: {TIME_HELP}.")],
    end: Annotated[
        str | None,
        typer.Argument(metavar="END", help="End (or +LENGTH); default: the end of the file."),
    ] = None,
    output: OutputArgument = None,
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import edit
    from lincae_cli.latents.timeline import parse_end, parse_position

    result_args.check(output)
    (source,), names = read_inputs([input_file])
    rate, length = source.meta.source_sample_rate, source.meta.num_samples
    begin = parse_position(start, rate, length, "START")
    stop = length if end is None else parse_end(end, begin, rate, length)
    result = edit.trim(source, begin, stop, silence_for(source, affine, names[0]))
    result_args.write("trim", result, output, names)


@with_option_groups
def pad(
    input_file: InputArgument,
    output: OutputArgument = None,
    start: Annotated[str, typer.Option("--start", metavar="SECONDS", help="Silence before.")] = "0",
    end: Annotated[str, typer.Option("--end", metavar="SECONDS", help="Silence after.")] = "0",
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import edit
    from lincae_cli.latents.timeline import parse_seconds

    before, after = parse_seconds(start, "--start"), parse_seconds(end, "--end")
    result_args.check(output)
    (source,), names = read_inputs([input_file])
    rate = source.meta.source_sample_rate
    silence = silence_for(source, affine, names[0])
    result = edit.pad(source, round(before * rate), round(after * rate), silence)
    result_args.write("pad", result, output, names)


@with_option_groups
def fade(
    input_file: InputArgument,
    output: OutputArgument = None,
    fade_in: Annotated[str, typer.Option("--in", metavar="SECONDS", help="Fade-in length.")] = "0",
    fade_out: Annotated[
        str, typer.Option("--out", metavar="SECONDS", help="Fade-out length.")
    ] = "0",
    shape: Annotated[
        str, typer.Option("--shape", metavar="SHAPE", help="linear, cosine or log.")
    ] = "linear",
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import edit
    from lincae_cli.latents.timeline import fade_curve, parse_seconds

    seconds_in, seconds_out = parse_seconds(fade_in, "--in"), parse_seconds(fade_out, "--out")
    fade_curve(shape)  # an unknown shape fails before reading
    if seconds_in == 0 and seconds_out == 0:
        raise UsageError("give --in SECONDS and/or --out SECONDS")
    result_args.check(output)
    (source,), names = read_inputs([input_file])
    silence = silence_for(source, affine, names[0])
    result = edit.fade(source, seconds_in, seconds_out, shape, silence)
    result_args.write("fade", result, output, names)


@with_option_groups
def concat(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUTS...", help="Two or more .lat files, in order.", show_default=False
        ),
    ],
    output: OutputArgument = None,
    crossfade: Annotated[
        str, typer.Option("--crossfade", metavar="SECONDS", help="Overlap at each seam.")
    ] = "0",
    rate: Annotated[
        int | None,
        typer.Option(
            "--rate",
            metavar="HZ",
            help="Output sample rate (needed when inputs' differ).",
            show_default=False,
        ),
    ] = None,
    affine: AffineOption = None,
    result_args: ResultArgs = ResultArgs(),
) -> None:
    from lincae_cli.latents import edit
    from lincae_cli.latents.timeline import parse_seconds

    need_two_inputs("concat", inputs)
    overlap = parse_seconds(crossfade, "--crossfade")
    if rate is not None and rate < 1:
        raise LincaeError(f"--rate must be a positive number of Hz, not {rate}")
    result_args.check(output)
    files, names = read_inputs(inputs)
    silence = silence_for(files[0], affine, names[0])
    result = edit.concat(files, names, overlap, rate, silence)
    result_args.write("concat", result, output, names)
