"""`lincae decode`: `.lat` latent files in, audio files out."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.cli.common import (
    LAT_SUFFIX,
    STDIO,
    BatchSizeOption,
    ChunkSecondsOption,
    DeviceOption,
    EngineArgs,
    ForceOption,
    JsonOption,
    LimitOption,
    ModelOption,
    NormalizeOption,
    PrecisionOption,
    QuietOption,
    Reporter,
    SampleRateOption,
    SeedOption,
    SkipExistingOption,
    SubtypeOption,
    Task,
    audio_suffixes,
    expand_inputs,
    make_progress,
    output_options,
    plan_outputs,
    prepare_parent,
    select_runnable,
)
from lincae_cli.errors import LincaeError

if TYPE_CHECKING:
    from lincae_cli.latents.latfile import LatentFile

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


def decode(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help=".lat files, folders (searched recursively), glob patterns, or - for stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="An audio file (one input), - for WAV on stdout, or a folder. "
            "Default: each input's name with --format's extension, beside it.",
            show_default=False,
        ),
    ] = None,
    file_format: Annotated[
        str,
        typer.Option(
            "--format", help="Extension of outputs named by lincae (folder or default outputs)."
        ),
    ] = "wav",
    sample_rate: SampleRateOption = None,
    subtype: SubtypeOption = None,
    normalize: NormalizeOption = False,
    limit: LimitOption = False,
    skip_existing: SkipExistingOption = False,
    force: ForceOption = False,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    chunk_seconds: ChunkSecondsOption = 10.0,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    suffix = "." + file_format.lower().lstrip(".")
    if suffix not in audio_suffixes():
        raise LincaeError(
            f"--format {file_format}: not an audio format lincae writes "
            f"({', '.join(sorted(s[1:] for s in audio_suffixes()))})"
        )
    if output not in (None, STDIO) and Path(output).suffix.lower() == LAT_SUFFIX:
        raise LincaeError(f"{output}: decode writes audio; name the output .wav, .flac, ...")
    stdout_busy = output == STDIO or (output is None and STDIO in inputs)
    reporter = Reporter("decode", quiet, json_output, stdout_busy)
    engine_args = EngineArgs(model, device, batch_size, chunk_seconds, precision, seed)
    engine_args.options()  # validate the options before any work

    from lincae_cli.engine.shard import shard_info, shard_items

    shard = shard_info()
    files, failures = expand_inputs(inputs, {LAT_SUFFIX}, ".lat")
    for name, message in failures:
        reporter.failed(name, message)

    def is_audio(path: str) -> bool:
        return Path(path).suffix.lower() in audio_suffixes()

    tasks = plan_outputs(files, output, lambda _: suffix, is_audio, reporter)
    tasks = shard_items(tasks, [_size(task) for task in tasks], shard)
    if shard.is_distributed:
        reporter.extra.update(rank=shard.rank, world_size=shard.world_size)
    tasks = select_runnable(tasks, force, skip_existing, reporter)
    out_options = output_options(sample_rate, subtype, normalize, limit)
    groups = read_latents(tasks, engine_args.model, reporter)
    for spec, members in groups.items():
        decode_latent_files(members, spec, engine_args, out_options, reporter, quiet, shard)
    raise typer.Exit(reporter.finish())


def read_latents(
    tasks: list[Task], model: str | None, reporter: Reporter
) -> dict[str, list[tuple[Task, LatentFile]]]:
    """Read every input; group them by the model spec that decodes them."""
    from lincae_cli.latents.latfile import read_lat

    groups: dict[str, list[tuple[Task, LatentFile]]] = {}
    for task in tasks:
        try:
            lat = read_lat(task.input.arg)
            spec = model or decoding_model_for(lat, task.input.name)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            continue
        groups.setdefault(spec, []).append((task, lat))
    return groups


def decoding_model_for(lat: LatentFile, name: str) -> str:
    """The model recorded in a .lat file, when it is a registered name (else an error)."""
    from lincae_cli.hub.registry import REGISTRY

    if lat.meta.model_name in REGISTRY:
        return lat.meta.model_name
    raise LincaeError(
        f"{name}: encoded with model '{lat.meta.model_name}', which is not a registered model; "
        f"pass its file with --model PATH"
    )


def decode_latent_files(
    members: list[tuple[Task, LatentFile]],
    spec: str,
    engine_args: EngineArgs,
    out_options: Any,
    reporter: Reporter,
    quiet: bool,
    shard: Any = None,
) -> None:
    """Decode ``members`` with the model ``spec``, writing each task's output."""
    from lincae_cli.engine.runner import Engine

    try:
        engine = Engine.load(spec, engine_args.options(), shard)
    except LincaeError as error:
        if len(members) == 1:
            raise
        for task, _ in members:
            reporter.failed(task.input.name, f"{task.input.name}: {error}")
        return
    reporter.extra.update(model=engine.model_name, device=str(engine.device))
    jobs, task_of = [], {}
    for task, lat in members:
        try:
            prepare_parent(task)
            job = engine.decode_job(lat, task.output, out_options, task.input.name)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            continue
        jobs.append(job)
        task_of[id(job)] = task
    with contextlib.closing(engine.run(jobs, make_progress("decoding", quiet))) as outcomes:
        for outcome in outcomes:
            task = task_of[id(outcome.job)]
            if outcome.error is not None:
                reporter.failed(task.input.name, str(outcome.error))
                continue
            report = outcome.result
            if report.clipped_samples:
                reporter.warn(clip_warning(task.output, report))
            reporter.ok(
                task,
                duration_seconds=round(outcome.job.duration_seconds, 6),
                sample_rate=report.sample_rate,
                channels=outcome.job.channels,
                peak=round(report.peak, 6),
                clipped_samples=report.clipped_samples,
            )


def clip_warning(output: str, report: Any) -> str:
    import math

    shown = "<stdout>" if output == STDIO else output
    peak_db = 20 * math.log10(report.peak) if report.peak > 0 else float("-inf")
    return (
        f"{shown}: decoded audio clips ({report.clipped_samples} samples beyond full scale, "
        f"peak {peak_db:+.1f} dBFS); use --normalize or --limit, or lower the gain"
    )


def _size(task: Task) -> float:
    try:
        return float(task.input.path.stat().st_size) if task.input.path is not None else 0.0
    except OSError:
        return 0.0
