"""`lincae decode`: `.lat` latent files in, audio files out."""

from __future__ import annotations

from typing import Annotated

import typer

from lincae_cli.cli.options import (
    AudioOutputArgs,
    DecodeEngineArgs,
    FileBatchArgs,
    inputs_argument,
    output_option,
    with_option_groups,
)

DECODE_HELP = """Decode latent files (.lat, or .npy with its .json sidecar) back to audio.

The output has the original length, sample rate and channel count (unless --sample-rate); \
its format follows the file name's extension (.wav, .flac, .ogg, .opus, ...; .opus is Opus \
at 48 kHz unless the rate is one Opus takes). Decoding is stochastic but seeded: the same \
file and --seed give the same audio.

A .npy without its sidecar (bare latents shaped (channels, 64, frames), e.g. from another \
tool) needs --model and --sample-rate (the rate of its audio); its length is the span of its \
frames.

Examples:

  lincae decode song.lat                       (writes song.wav beside it)

  lincae decode song.lat -o song.flac --subtype PCM_24

  lincae decode latents/ -o audio/ --format flac

  lincae decode mix.lat -o - | aplay

  lincae decode song.npy -o song.opus

  lincae decode bare.npy --model lin-cae --sample-rate 44100 -o bare.wav

  lincae decode mix.lat -n                     (decoded in memory, not written)

  lincae encode song.wav -o - | lincae gain - -6dB -o - | lincae decode - -o quieter.wav
"""

_OUTPUT_HELP = (
    "An audio file (one input), - for WAV on stdout, or a folder (one that exists, or ending "
    "in /). "
    "Default: each input's name with --format's extension, beside it."
)


@with_option_groups
def decode(
    inputs: Annotated[list[str], inputs_argument(".lat or .npy files")],
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
    engine_args: DecodeEngineArgs = DecodeEngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    from lincae_cli.batch.files import decode_files

    batch.check(inputs, output)
    reporter = batch.reporter("decode", inputs, output)
    decode_files(
        inputs,
        output,
        inference=engine_args.inference(reporter, "decoding"),
        audio=audio_args.options(),
        file_format=file_format,
        skip_existing=batch.skip_existing,
        force=batch.force,
        null_output=batch.null_output,
        result=reporter.result,
    )
    raise typer.Exit(reporter.finish())
