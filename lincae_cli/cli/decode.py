"""`lincae decode`: `.lat` latent files in, audio files out."""

from __future__ import annotations

from typing import Annotated

import typer

from lincae_cli.cli.options import (
    AudioOutputArgs,
    EngineArgs,
    FileBatchArgs,
    inputs_argument,
    output_option,
    refuse_terminal_stdout,
    with_option_groups,
    writes_stdout,
)

DECODE_HELP = """Decode latent files (.lat) back to audio.

The output has the original length, sample rate and channel count (unless --sample-rate); \
its format follows the file name's extension (.wav, .flac, .ogg, ...). Decoding is \
stochastic but seeded: the same file and --seed give the same audio.

Examples:

  lincae decode song.lat                       (writes song.wav beside it)

  lincae decode song.lat -o song.flac --subtype PCM_24

  lincae decode latents/ -o audio/ --format flac

  lincae decode mix.lat -o - | aplay

  lincae encode song.wav -o - | lincae gain - -6dB -o - | lincae decode - -o quieter.wav
"""

_OUTPUT_HELP = (
    "An audio file (one input), - for WAV on stdout, or a folder. "
    "Default: each input's name with --format's extension, beside it."
)


@with_option_groups
def decode(
    inputs: Annotated[list[str], inputs_argument(".lat files")],
    output: Annotated[str | None, output_option(_OUTPUT_HELP)] = None,
    file_format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="EXT",
            help="Extension of outputs named by lincae (folder or default outputs).",
        ),
    ] = "wav",
    audio_args: AudioOutputArgs = AudioOutputArgs(),
    engine_args: EngineArgs = EngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    from lincae_cli.batch.files import decode_files

    refuse_terminal_stdout(writes_stdout(inputs, output))
    reporter = batch.reporter("decode", inputs, output)
    decode_files(
        inputs,
        output,
        inference=engine_args.inference(reporter, "decoding"),
        audio=audio_args.options(),
        file_format=file_format,
        skip_existing=batch.skip_existing,
        force=batch.force,
        result=reporter.result,
    )
    raise typer.Exit(reporter.finish())
