"""`lincae encode`: audio files in, `.lat` latent files out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.cli.common import (
    STDIO,
    DtypeOption,
    EngineArgs,
    FileBatchArgs,
    Reporter,
    Task,
    audio_suffixes,
    check_dtype,
    inputs_argument,
    is_lat_output,
    lat_suffix,
    output_option,
    plan_tasks,
    prepare_parent,
    read_stdin_once,
    run_jobs,
    with_option_groups,
)
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.engine.shard import ShardInfo

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
"""

_OUTPUT_HELP = (
    "A .lat file (one input), - for stdout, or a folder. "
    "Default: each input's name with .lat, beside it."
)


@with_option_groups
def encode(
    inputs: Annotated[list[str], inputs_argument("Audio files")],
    output: Annotated[str | None, output_option(_OUTPUT_HELP)] = None,
    dtype: DtypeOption = "float16",
    engine_args: EngineArgs = EngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    check_dtype(dtype)
    if output not in (None, STDIO) and Path(output).suffix.lower() in audio_suffixes():
        raise LincaeError(f"{output}: encode writes .lat files; name the output *.lat")
    reporter = batch.reporter("encode", inputs, output)
    engine_args.options()  # validate the options before any work
    tasks, shard = plan_tasks(
        inputs,
        output,
        suffixes=audio_suffixes(),
        kind="audio",
        suffix_for=lat_suffix,
        is_output_file=is_lat_output,
        batch=batch,
        reporter=reporter,
    )
    if tasks:
        encode_tasks(tasks, engine_args, shard, dtype, reporter)
    raise typer.Exit(reporter.finish())


def encode_tasks(
    tasks: list[Task],
    engine_args: EngineArgs,
    shard: ShardInfo,
    dtype: str,
    reporter: Reporter,
) -> None:
    """Encode every task's input and write its .lat, reporting each file as it ends."""
    from lincae_cli.engine.runner import Engine
    from lincae_cli.engine.streams import open_audio_source
    from lincae_cli.latents.latfile import write_lat

    engine = Engine.load(engine_args.model, engine_args.options(), shard)
    stdin_bytes = read_stdin_once([task.input for task in tasks])
    jobs = []
    for task in tasks:
        try:
            source = open_audio_source(task.input.arg, stdin_bytes)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            continue
        jobs.append((task, engine.encode_job(source, input_name=task.input.name)))
    reporter.extra.update(model=engine.model_name, device=str(engine.device))

    def write(task: Task, outcome: Any) -> None:
        lat = outcome.result
        try:
            prepare_parent(task)
            write_lat(task.output, lat, dtype=dtype)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            return
        reporter.ok(
            task,
            duration_seconds=round(lat.meta.duration_seconds, 6),
            channels=lat.channels,
            frames=lat.frames,
            loudness_lufs=lat.meta.source_loudness_lufs,
        )

    run_jobs(engine, jobs, "encoding", reporter, write)
