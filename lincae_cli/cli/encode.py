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
    refuse_terminal_stdout,
    with_option_groups,
    writes_stdout,
)

ENCODE_HELP = """Encode audio into latent files (.lat).

Any format libsndfile reads (WAV, FLAC, OGG, AIFF, MP3, ...), at any sample rate: audio is \
resampled to the model's rate and every channel gets its own latents. The original rate, \
length, channel count and loudness are recorded so `lincae decode` can restore them.

Examples:

  lincae encode song.wav                      (writes song.lat beside it)

  lincae encode song.flac -o latents/song.lat

  lincae encode music/ -o latents/            (recursive; folders mirrored under latents/)

  lincae encode 'takes/*.wav' -o latents/ --skip-existing

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
    "A .lat file (one input), - for stdout, or a folder. "
    "Default: each input's name with .lat, beside it."
)


@with_option_groups
def encode(
    inputs: Annotated[list[str], inputs_argument("Audio files")],
    output: Annotated[str | None, output_option(_OUTPUT_HELP)] = None,
    dtype: DtypeOption = "float16",
    manifest: Annotated[bool, typer.Option("--manifest", help=_MANIFEST_HELP)] = False,
    engine_args: EngineArgs = EngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    from lincae_cli.batch.files import encode_files

    refuse_terminal_stdout(writes_stdout(inputs, output))
    reporter = batch.reporter("encode", inputs, output)
    encode_files(
        inputs,
        output,
        inference=engine_args.inference(reporter, "encoding"),
        dtype=dtype,
        skip_existing=batch.skip_existing,
        force=batch.force,
        manifest=manifest,
        result=reporter.result,
    )
    raise typer.Exit(reporter.finish())
