"""`lincae encode`: audio files in, `.lat` latent files out."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lincae_cli.cli.common import (
    STDIO,
    BatchSizeOption,
    ChunkSecondsOption,
    DeviceOption,
    DtypeOption,
    EngineArgs,
    ForceOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    QuietOption,
    Reporter,
    SeedOption,
    SkipExistingOption,
    Task,
    audio_suffixes,
    expand_inputs,
    is_lat_output,
    lat_suffix,
    make_progress,
    plan_outputs,
    prepare_parent,
    read_stdin_once,
    select_runnable,
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


def encode(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Audio files, folders (searched recursively), glob patterns, or - for stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="A .lat file (one input), - for stdout, or a folder. "
            "Default: each input's name with .lat, beside it.",
            show_default=False,
        ),
    ] = None,
    skip_existing: SkipExistingOption = False,
    force: ForceOption = False,
    dtype: DtypeOption = "float16",
    model: ModelOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    chunk_seconds: ChunkSecondsOption = 10.0,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    if dtype not in ("float16", "float32"):
        raise LincaeError(f"--dtype must be float16 or float32, not {dtype!r}")
    if output not in (None, STDIO) and Path(output).suffix.lower() in audio_suffixes():
        raise LincaeError(f"{output}: encode writes .lat files; name the output *.lat")
    stdout_busy = output == STDIO or (output is None and STDIO in inputs)
    reporter = Reporter("encode", quiet, json_output, stdout_busy)
    engine_args = EngineArgs(model, device, batch_size, chunk_seconds, precision, seed)
    engine_args.options()  # validate the options before any work

    from lincae_cli.engine.shard import shard_info, shard_items

    shard = shard_info()
    files, failures = expand_inputs(inputs, audio_suffixes(), "audio")
    for name, message in failures:
        reporter.failed(name, message)
    tasks = plan_outputs(files, output, lat_suffix, is_lat_output, reporter)
    tasks = shard_items(tasks, [_input_size(task.input.path) for task in tasks], shard)
    if shard.is_distributed:
        reporter.extra.update(rank=shard.rank, world_size=shard.world_size)
    tasks = select_runnable(tasks, force, skip_existing, reporter)
    if tasks:
        encode_tasks(tasks, engine_args, shard, dtype, reporter, quiet)
    raise typer.Exit(reporter.finish())


def encode_tasks(
    tasks: list[Task],
    engine_args: EngineArgs,
    shard: ShardInfo,
    dtype: str,
    reporter: Reporter,
    quiet: bool,
) -> None:
    """Encode every task's input and write its .lat, reporting each file as it ends."""
    from lincae_cli.engine.runner import Engine
    from lincae_cli.engine.streams import open_audio_source
    from lincae_cli.latents.latfile import write_lat

    engine = Engine.load(engine_args.model, engine_args.options(), shard)
    stdin_bytes = read_stdin_once([task.input for task in tasks])
    jobs, task_of = [], {}
    for task in tasks:
        try:
            source = open_audio_source(task.input.arg, stdin_bytes)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            continue
        job = engine.encode_job(source, input_name=task.input.name)
        jobs.append(job)
        task_of[id(job)] = task
    reporter.extra.update(model=engine.model_name, device=str(engine.device))
    with contextlib.closing(engine.run(jobs, make_progress("encoding", quiet))) as outcomes:
        for outcome in outcomes:
            task = task_of[id(outcome.job)]
            if outcome.error is not None:
                reporter.failed(task.input.name, str(outcome.error))
                continue
            lat = outcome.result
            try:
                prepare_parent(task)
                write_lat(task.output, lat, dtype=dtype)
            except LincaeError as error:
                reporter.failed(task.input.name, str(error))
                continue
            reporter.ok(
                task,
                duration_seconds=round(lat.meta.duration_seconds, 6),
                channels=lat.channels,
                frames=lat.frames,
                loudness_lufs=lat.meta.source_loudness_lufs,
            )


def _input_size(path: Path | None) -> float:
    try:
        return float(path.stat().st_size) if path is not None else 0.0
    except OSError:
        return 0.0
