"""Encode and decode files and folders: the library's batch API (the CLI renders its result).

`encode_files` and `decode_files` expand their inputs, plan the outputs (beside the inputs, a
file, stdout, or a mirrored folder; ``skip_existing`` / ``force``), take this torchrun rank's
share, run the engine over every file in shared batches and return a `BatchResult`: each input
done, skipped or failed with its one-line reason. Outputs are written atomically; an input
that fails leaves no output behind and does not stop the others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lincae_cli.audio.io import AUDIO_EXTENSIONS, is_audio_path
from lincae_cli.batch.inputs import InputFile, read_stdin_once
from lincae_cli.batch.plan import Task, check_single_output, make_parent_folder
from lincae_cli.batch.result import BatchResult
from lincae_cli.batch.shares import plan_shares
from lincae_cli.errors import LincaeError
from lincae_cli.paths import LAT_SUFFIX, STDIO, is_lat_path, is_stdio

if TYPE_CHECKING:
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.batch.run_manifest import RunManifest
    from lincae_cli.engine.inference import Engine, EngineOptions
    from lincae_cli.engine.jobs import Job
    from lincae_cli.engine.runner import JobOutcome, ProgressListener
    from lincae_cli.engine.shard import ShardInfo
    from lincae_cli.latents.latfile import LatentFile

T = TypeVar("T")


@dataclass(frozen=True)
class Inference:
    """The model and engine settings of a batch (None model: the default for encoding, the
    model recorded in each .lat for decoding), and where progress goes."""

    model: str | None = None
    options: EngineOptions | None = None
    progress: ProgressListener | None = field(default=None, compare=False)

    def engine_options(self) -> EngineOptions:
        from lincae_cli.engine.inference import EngineOptions

        return self.options or EngineOptions()


# -- encode -----------------------------------------------------------------------------------


def encode_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | None = None,
    *,
    inference: Inference = Inference(),
    dtype: str = "float16",
    skip_existing: bool = False,
    force: bool = False,
    manifest: bool = False,
    result: BatchResult | None = None,
) -> BatchResult:
    """Encode audio files, folders (recursively, mirrored under a folder ``output``), glob
    patterns or ``-`` (stdin) into ``.lat`` files; ``output`` None writes each beside its
    input. Returns what happened to every input (added to ``result`` when given).

    ``manifest`` (``output`` a folder): report every input to this process's part of the
    folder's manifest (batch/manifest.py), and with ``skip_existing`` deal only the work that
    earlier attempts left undone among torchrun's ranks."""
    from lincae_cli.latents.latfile import check_dtype

    check_dtype(dtype)
    if output not in (None, STDIO) and is_audio_path(output):
        raise LincaeError(f"{output}: encode writes .lat files; name the output *.lat")
    result = result if result is not None else BatchResult("encode")
    inference.engine_options()  # invalid options fail before any work
    tasks, shard, run_manifest = plan_shares(
        inputs, output, AUDIO_EXTENSIONS, "audio", LAT_SUFFIX, is_lat_path, result,
        force=force, skip_existing=skip_existing, manifest=manifest,
    )  # fmt: skip
    try:
        if tasks:
            _encode_tasks(tasks, shard, inference, dtype, result, run_manifest)
    finally:
        if run_manifest is not None:
            run_manifest.close()
    return result


def _encode_tasks(
    tasks: list[Task],
    shard: ShardInfo,
    inference: Inference,
    dtype: str,
    result: BatchResult,
    run_manifest: RunManifest | None,
) -> None:
    from lincae_cli.audio.sources import open_audio_source
    from lincae_cli.engine.inference import Engine
    from lincae_cli.latents.latfile import write_lat

    engine = Engine.load(inference.model, inference.engine_options(), shard)
    stdin_bytes = read_stdin_once([task.input for task in tasks])
    jobs: list[tuple[Task, Job]] = []
    for task in tasks:
        try:
            source = open_audio_source(task.input.arg, stdin_bytes)
        except LincaeError as error:
            result.failed(task.input.name, str(error))
            continue
        jobs.append((task, engine.encode_job(source, input_name=task.input.name)))
    result.info.update(model=engine.model_name, device=str(engine.device))
    for task, outcome in _run(engine, jobs, inference.progress, result):
        lat = outcome.result
        try:
            task.prepare_parent()
            write_lat(task.output, lat, dtype=dtype)
        except LincaeError as error:
            result.failed(task.input.name, str(error))
            continue
        if run_manifest is not None:
            run_manifest.done(task, lat)
        result.ok(
            task.input.name,
            task.output,
            duration_seconds=round(lat.meta.duration_seconds, 6),
            channels=lat.channels,
            frames=lat.frames,
            loudness_lufs=lat.meta.source_loudness_lufs,
        )


# -- decode -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeTarget:
    """Latents to decode, where to (a path, ``-`` or None for memory), and what the record
    of it says: ``name`` is its input, ``fields`` are added to its record when it is done."""

    name: str
    output: str
    lat: LatentFile
    create_parents: bool = False
    fields: dict[str, Any] = field(default_factory=dict)


def decode_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | None = None,
    *,
    inference: Inference = Inference(),
    audio: OutputOptions | None = None,
    file_format: str = "wav",
    skip_existing: bool = False,
    force: bool = False,
    result: BatchResult | None = None,
) -> BatchResult:
    """Decode ``.lat`` files, folders (recursively, mirrored under a folder ``output``), glob
    patterns or ``-`` (stdin) to audio; ``output`` None writes each beside its input with
    ``file_format``'s extension. Returns what happened to every input."""
    suffix = "." + file_format.lower().lstrip(".")
    if suffix not in AUDIO_EXTENSIONS:
        raise LincaeError(
            f"--format {file_format}: not an audio format lincae writes "
            f"({', '.join(sorted(s[1:] for s in AUDIO_EXTENSIONS))})"
        )
    if output not in (None, STDIO) and is_lat_path(output):
        raise LincaeError(f"{output}: decode writes audio; name the output .wav, .flac, ...")
    result = result if result is not None else BatchResult("decode")
    inference.engine_options()  # invalid options fail before any work
    tasks, shard, _ = plan_shares(
        inputs, output, {LAT_SUFFIX}, ".lat", suffix, is_audio_path, result,
        force=force, skip_existing=skip_existing,
    )  # fmt: skip
    groups: dict[str, list[DecodeTarget]] = {}
    for task in tasks:
        try:
            lat, spec = _read_latents(task.input, inference.model)
        except LincaeError as error:
            result.failed(task.input.name, str(error))
            continue
        target = DecodeTarget(task.input.name, task.output, lat, task.create_parents)
        groups.setdefault(spec, []).append(target)
    for spec, targets in groups.items():
        decode_targets(targets, spec, inference, audio, result, shard)
    return result


def _read_latents(item: InputFile, model: str | None) -> tuple[LatentFile, str]:
    """A .lat input and the model spec that decodes it."""
    from lincae_cli.latents.latfile import read_lat

    lat = read_lat(item.arg)
    return lat, model or decoding_model_for(lat, item.name)


def decoding_model_for(lat: LatentFile, name: str) -> str:
    """The model recorded in a .lat file, when it is a registered name (else an error)."""
    from lincae_cli.hub.registry import REGISTRY

    if lat.meta.model_name in REGISTRY:
        return lat.meta.model_name
    raise LincaeError(
        f"{name}: encoded with model '{lat.meta.model_name}', which is not a registered model; "
        f"pass its file with --model PATH"
    )


def decode_targets(
    targets: list[DecodeTarget],
    spec: str,
    inference: Inference,
    audio: OutputOptions | None,
    result: BatchResult,
    shard: ShardInfo | None = None,
) -> None:
    """Decode every target with the model ``spec``, adding a record for each to ``result``.

    A model that cannot be loaded fails every target, or raises when there is only one.
    """
    from lincae_cli.engine.inference import Engine

    try:
        engine = Engine.load(spec, inference.engine_options(), shard)
    except LincaeError as error:
        if len(targets) == 1:
            raise
        for target in targets:
            result.failed(target.name, f"{target.name}: {error}")
        return
    result.info.update(model=engine.model_name, device=str(engine.device))
    jobs: list[tuple[DecodeTarget, Job]] = []
    for target in targets:
        try:
            if target.create_parents:
                make_parent_folder(target.output)
            job = engine.decode_job(target.lat, target.output, audio, target.name)
        except LincaeError as error:
            result.failed(target.name, str(error))
            continue
        jobs.append((target, job))
    for target, outcome in _run(engine, jobs, inference.progress, result):
        report, job = outcome.result, outcome.job
        fields = {
            "duration_seconds": round(job.duration_seconds, 6),
            "sample_rate": report.sample_rate,
            "channels": job.channels,
            "peak": round(report.peak, 6),
            "clipped_samples": report.clipped_samples,
        }
        result.ok(target.name, target.output, **{**fields, **target.fields})


# -- one result -------------------------------------------------------------------------------


def check_result_output(output: str, dtype: str, force: bool) -> None:
    """Before any work: ``output`` of a one-result job (mix, gain, subtract) is a .lat, ``-``
    or an audio file that may be written."""
    from lincae_cli.latents.latfile import check_dtype

    check_dtype(dtype)
    if not (is_stdio(output) or is_lat_path(output) or is_audio_path(output)):
        raise LincaeError(
            f"{output}: unknown output type {Path(output).suffix!r}; use .lat, or an audio "
            f"extension ({', '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    check_single_output(output, force)


def save_result(
    lat: LatentFile,
    output: str,
    result: BatchResult,
    *,
    dtype: str = "float16",
    inference: Inference = Inference(),
    audio: OutputOptions | None = None,
    fields: dict[str, Any] | None = None,
) -> None:
    """Write ``lat`` to ``output``: a .lat (or ``-``, a .lat on stdout), or audio decoded with
    ``inference.model`` or else the model recorded in ``lat``. The record (input: the
    command) gets ``fields`` when it is done."""
    from lincae_cli.latents.latfile import write_lat

    fields = fields or {}
    if is_stdio(output) or is_lat_path(output):
        write_lat(output, lat, dtype=dtype)
        duration = round(lat.meta.duration_seconds, 6)
        result.ok(result.command, output, duration_seconds=duration, **fields)
        return
    spec = inference.model or decoding_model_for(lat, output)
    decode_targets(
        [DecodeTarget(result.command, output, lat, fields=fields)], spec, inference, audio, result
    )


# -- shared steps -----------------------------------------------------------------------------


def _run(
    engine: Engine,
    jobs: list[tuple[T, Job]],
    progress: ProgressListener | None,
    result: BatchResult,
) -> Iterator[tuple[T, JobOutcome[Any]]]:
    """Run the engine jobs, each paired with what it was made for; record the ones that fail
    and yield (what it was made for, outcome) for the others as they end. Leaving early (an
    exception, Ctrl-C) aborts the unfinished jobs, so no partial output is left behind."""
    made_for = {job: what for what, job in jobs}
    with contextlib.closing(engine.run([job for _, job in jobs], progress)) as outcomes:
        for outcome in outcomes:
            if outcome.error is not None:
                result.failed(outcome.job.name, str(outcome.error))
                continue
            yield made_for[outcome.job], outcome
