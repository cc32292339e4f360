"""`lincae encode`: audio files in, `.lat` latent files out."""

from __future__ import annotations

from typing import Annotated

import typer

from lincae_cli.cli.options import (
    DtypeOption,
    EngineArgs,
    FileBatchArgs,
    inputs_argument,
    output_option,
    with_option_groups,
)

ENCODE_HELP = """Encode audio into latent files (.lat).

Any format libsndfile reads (WAV, FLAC, OGG, AIFF, MP3, ...), at any sample rate: audio is \
resampled to the model's rate and every channel gets its own latents. The original rate, \
length, channel count and loudness are recorded so `lincae decode` can restore them.

An output named *.npy (or --format npy) is the latents as a NumPy array of shape \
(channels, 64, frames) beside a .json sidecar holding the metadata, for tools that read \
arrays (stable-audio-tools' pre-encoded latents); lincae reads the pair back losslessly. \
Without --model: the model in the LINCAE_MODEL environment variable, else lincae-small.

Examples:

  lincae encode song.wav                      (writes song.lat beside it)

  lincae encode song.flac -o latents/song.lat

  lincae encode music/ -o latents/            (recursive; folders mirrored under latents/)

  lincae encode song.wav -o song.npy          (song.npy and its sidecar song.json)

  lincae encode music/ -o arrays/ --format npy --dtype float32

  LINCAE_MODEL=lin-cae lincae encode song.wav (the published model)

  lincae encode 'takes/*.wav' -o latents/ --skip-existing

  lincae encode music/ -n --json              (encodes all, writes nothing)

  cat song.wav | lincae encode - -o - > song.lat

  torchrun --nproc-per-node 2 --no-python lincae encode music/ -o latents/

  torchrun ... lincae encode music/ -o latents/ --manifest --skip-existing   (resumable)
"""

_MANIFEST_HELP = (
    "Report every input to a manifest in the -o folder (one JSON line per input and process; "
    "merge with `lincae manifest FOLDER`). With --skip-existing under torchrun, only the work "
    "earlier runs left undone is shared out, balanced again."
)
_OUTPUT_HELP = (
    "A .lat or .npy file (one input), - for a .lat on stdout, or a folder (one that exists, "
    "or ending in /). Default: each input's name with --format's extension, beside it."
)
_FORMAT_HELP = (
    "lat or npy: the type of the outputs lincae names (in a folder, or beside the inputs); "
    "npy writes NAME.npy and its sidecar NAME.json."
)


@with_option_groups
def encode(
    inputs: Annotated[list[str], inputs_argument("Audio files")],
    output: Annotated[str | None, output_option(_OUTPUT_HELP)] = None,
    dtype: DtypeOption = "float16",
    file_format: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help=_FORMAT_HELP)
    ] = "lat",
    manifest: Annotated[bool, typer.Option("--manifest", help=_MANIFEST_HELP)] = False,
    engine_args: EngineArgs = EngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    from lincae_cli.batch.files import encode_files

    batch.check(inputs, output)
    reporter = batch.reporter("encode", inputs, output)
    encode_files(
        inputs,
        output,
        inference=engine_args.inference(reporter, "encoding"),
        dtype=dtype,
        file_format=file_format,
        skip_existing=batch.skip_existing,
        force=batch.force,
        null_output=batch.null_output,
        manifest=manifest,
        result=reporter.result,
    )
    raise typer.Exit(reporter.finish())
