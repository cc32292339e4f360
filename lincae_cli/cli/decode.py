"""`lincae decode`: `.lat` latent files in, audio files out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.cli.common import (
    LAT_SUFFIX,
    STDIO,
    AudioOutputArgs,
    EngineArgs,
    FileBatchArgs,
    Reporter,
    Task,
    audio_suffixes,
    inputs_argument,
    output_option,
    plan_tasks,
    prepare_parent,
    run_jobs,
    with_option_groups,
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
            "--format", help="Extension of outputs named by lincae (folder or default outputs)."
        ),
    ] = "wav",
    audio_args: AudioOutputArgs = AudioOutputArgs(),
    engine_args: EngineArgs = EngineArgs(),
    batch: FileBatchArgs = FileBatchArgs(),
) -> None:
    suffix = "." + file_format.lower().lstrip(".")
    if suffix not in audio_suffixes():
        raise LincaeError(
            f"--format {file_format}: not an audio format lincae writes "
            f"({', '.join(sorted(s[1:] for s in audio_suffixes()))})"
        )
    if output not in (None, STDIO) and Path(output).suffix.lower() == LAT_SUFFIX:
        raise LincaeError(f"{output}: decode writes audio; name the output .wav, .flac, ...")
    reporter = batch.reporter("decode", inputs, output)
    engine_args.options()  # validate the options before any work

    def is_audio(path: str) -> bool:
        return Path(path).suffix.lower() in audio_suffixes()

    tasks, shard = plan_tasks(
        inputs,
        output,
        suffixes={LAT_SUFFIX},
        kind=".lat",
        suffix_for=lambda _: suffix,
        is_output_file=is_audio,
        batch=batch,
        reporter=reporter,
    )
    out_options = audio_args.options()
    groups = read_latents(tasks, engine_args.model, reporter)
    for spec, members in groups.items():
        decode_latent_files(members, spec, engine_args, out_options, reporter, shard)
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
    jobs = []
    for task, lat in members:
        try:
            prepare_parent(task)
            job = engine.decode_job(lat, task.output, out_options, task.input.name)
        except LincaeError as error:
            reporter.failed(task.input.name, str(error))
            continue
        jobs.append((task, job))

    def report_written(task: Task, outcome: Any) -> None:
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

    run_jobs(engine, jobs, "decoding", reporter, report_written)


def clip_warning(output: str, report: Any) -> str:
    import math

    shown = "<stdout>" if output == STDIO else output
    peak_db = 20 * math.log10(report.peak) if report.peak > 0 else float("-inf")
    return (
        f"{shown}: decoded audio clips ({report.clipped_samples} samples beyond full scale, "
        f"peak {peak_db:+.1f} dBFS); use --normalize or --limit, or lower the gain"
    )
