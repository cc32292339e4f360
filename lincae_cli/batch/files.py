"""Encode and decode files and folders: the library's batch API (the CLI renders its result).

`encode_files` and `decode_files` expand their inputs, plan the outputs (beside the inputs, a
file, stdout, or a mirrored folder; ``skip_existing`` / ``force``), take this torchrun rank's
share, run the engine over every file in shared batches and return a `BatchResult`: each input
done, skipped or failed with its one-line reason. Outputs are written atomically; an input
that fails leaves no output behind and does not stop the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lincae_cli.audio.io import AUDIO_EXTENSIONS, is_audio_path, unavailable_reason
from lincae_cli.batch.inputs import read_stdin_once
from lincae_cli.batch.latent_inputs import read_latents, with_model
from lincae_cli.batch.plan import Task, check_output_name, make_parent_folder
from lincae_cli.batch.result import BatchResult
from lincae_cli.batch.shares import plan_shares
from lincae_cli.errors import LincaeError
from lincae_cli.paths import (
    LAT_SUFFIX,
    NPY_SUFFIX,
    NULL_NAME,
    STDIO,
    is_latent_path,
    is_stdio,
)

if TYPE_CHECKING:
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.batch.run_manifest import RunManifest
    from lincae_cli.engine.inference import Engine, EngineOptions
    from lincae_cli.engine.jobs import Job
    from lincae_cli.engine.runner import JobOutcome, ProgressListener
    from lincae_cli.engine.shard import ShardInfo
    from lincae_cli.latents.latfile import LatentFile
    from lincae_cli.latents.npy import BareLatents

T = TypeVar("T")
LATENT_FORMATS = {"lat": LAT_SUFFIX, "npy": NPY_SUFFIX}
"""``encode --format``: the suffix of the outputs lincae names (a folder's, or beside inputs)."""


@dataclass(frozen=True)
class Inference:
    """The model and engine settings of a batch (None model: the default for encoding, the
    model recorded in each .lat for decoding), and where progress goes."""

    model: str | None = None
    options: EngineOptions | None = None
    progress: ProgressListener | None = field(default=None, compare=False)

    def engine_options(self) -> EngineOptions:
        from lincae_cli.engine.options import EngineOptions

        return self.options or EngineOptions()


# -- encode -----------------------------------------------------------------------------------


def encode_files(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | None = None,
    *,
    inference: Inference = Inference(),
    dtype: str = "float16",
    file_format: str = "lat",
    skip_existing: bool = False,
    force: bool = False,
    manifest: bool = False,
    null_output: bool = False,
    result: BatchResult | None = None,
) -> BatchResult:
    """Encode audio files, folders (recursively, mirrored under a folder ``output``), glob
    patterns or ``-`` (stdin) into ``.lat`` files; ``output`` None writes each beside its
    input, ``null_output`` (``output`` None) writes nothing (outputs named `NULL_NAME`).
    Returns what happened to every input (added to ``result`` when given).

    An output named ``*.npy``, or ``file_format`` ``"npy"`` for the outputs lincae names, is
    the latents as a NumPy array beside a ``.json`` sidecar (latents/npy.py).

    ``manifest`` (``output`` a folder): report every input to this process's part of the
    folder's manifest (batch/manifest.py), and with ``skip_existing`` deal only the work that
    earlier attempts left undone among torchrun's ranks."""
    from lincae_cli.latents.latfile import check_dtype

    check_dtype(dtype)
    suffix = LATENT_FORMATS.get(file_format.lower().lstrip("."))
    if suffix is None:
        raise LincaeError(f"--format {file_format}: encode writes lat or npy files")
    if output not in (None, STDIO) and is_audio_path(output):
        raise LincaeError(f"{output}: encode writes .lat files; name the output *.lat")
    check_output_name(output, is_latent_path, "a .lat or .npy file")
    if manifest and null_output:
        raise LincaeError("--manifest records the files written, so it cannot be used with -n")
    if manifest and suffix != LAT_SUFFIX:
        raise LincaeError(
            "--manifest catalogues .lat files, so it cannot be used with --format npy"
        )
    result = result if result is not None else BatchResult("encode")
    inference.engine_options()  # invalid options fail before any work
    tasks, shard, run_manifest = plan_shares(
        inputs, output, AUDIO_EXTENSIONS, "audio", suffix, is_latent_path, result,
        force=force, skip_existing=skip_existing, manifest=manifest, null_output=null_output,
    )  # fmt: skip
    try:
        if tasks:
            _encode_tasks(tasks, shard, inference, dtype, result, run_manifest, null_output)
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
    null_output: bool,
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
            if not null_output:
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
            sample_rate=lat.meta.source_sample_rate,
            channels=lat.channels,
            frames=lat.frames,
            loudness_lufs=lat.meta.source_loudness_lufs,
        )


# -- decode -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeTarget:
    """Latents to decode, where to (a path, ``-``, or None: decoded in memory and dropped, the
    record's output `NULL_NAME`), and what the record of it says: ``name`` is its input,
    ``fields`` are added to its record when it is done. Bare latents (a ``.npy`` without its
    sidecar) get the model's metadata when the model is loaded."""

    name: str
    output: str | None
    lat: LatentFile | BareLatents
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
    null_output: bool = False,
    result: BatchResult | None = None,
) -> BatchResult:
    """Decode ``.lat`` files, folders (recursively, mirrored under a folder ``output``), glob
    patterns or ``-`` (stdin) to audio; ``output`` None writes each beside its input with
    ``file_format``'s extension, ``null_output`` (``output`` None) decodes each in memory and
    writes nothing. Returns what happened to every input.

    ``.npy`` inputs are read with their ``.json`` sidecar; one without (bare latents) needs
    ``inference.model`` and ``audio.sample_rate`` (the rate of its audio)."""
    suffix = "." + file_format.lower().lstrip(".")
    if suffix not in AUDIO_EXTENSIONS:
        raise LincaeError(
            f"--format {file_format}: "
            + (
                unavailable_reason(suffix)
                or "not an audio format lincae writes "
                f"({', '.join(sorted(s[1:] for s in AUDIO_EXTENSIONS))})"
            )
        )
    if output not in (None, STDIO) and is_latent_path(output):
        raise LincaeError(f"{output}: decode writes audio; name the output .wav, .flac, ...")
    check_output_name(output, _is_audio_output, "an audio file (.wav, .flac, ...)")
    result = result if result is not None else BatchResult("decode")
    inference.engine_options()  # invalid options fail before any work
    tasks, shard, _ = plan_shares(
        inputs, output, {LAT_SUFFIX, NPY_SUFFIX}, ".lat or .npy", suffix, is_audio_path, result,
        force=force, skip_existing=skip_existing, null_output=null_output,
    )  # fmt: skip
    rate = audio.sample_rate if audio is not None else None
    groups: dict[str, list[DecodeTarget]] = {}
    for task in tasks:
        try:
            lat, spec = read_latents(task.input, inference.model, rate)
        except LincaeError as error:
            result.failed(task.input.name, str(error))
            continue
        output = None if null_output else task.output
        target = DecodeTarget(task.input.name, output, lat, task.create_parents)
        groups.setdefault(spec, []).append(target)
    for spec, targets in groups.items():
        decode_targets(targets, spec, inference, audio, result, shard)
    return result


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
            if target.create_parents and target.output is not None:
                make_parent_folder(target.output)
            lat = with_model(target.lat, engine)
            options = _written_as(target.output, lat, audio)
            job = engine.decode_job(lat, target.output, options, target.name)
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
        output = NULL_NAME if target.output is None else target.output
        result.ok(target.name, output, **{**fields, **target.fields})


def _written_as(output: str | None, lat: LatentFile, audio: OutputOptions | None) -> OutputOptions:
    """The output options of one file: the rate and subtype its type takes (.opus: Opus)."""
    from lincae_cli.audio.io import output_settings
    from lincae_cli.audio.sink import OutputOptions

    audio = audio or OutputOptions()
    if output is None or is_stdio(output):
        return audio
    rate = audio.sample_rate or lat.meta.source_sample_rate
    rate, subtype = output_settings(output, rate, audio.subtype, audio.sample_rate is not None)
    if subtype == audio.subtype:  # only a type with a subtype of its own (.opus) changes them
        return audio
    return dataclasses.replace(audio, sample_rate=rate, subtype=subtype)


# -- shared steps -----------------------------------------------------------------------------


def _is_audio_output(path: str) -> bool:
    """Whether ``path`` is audio lincae writes; a type this libsndfile lacks (.opus) raises."""
    reason = unavailable_reason(path)
    if reason is not None:
        raise LincaeError(f"{path}: {reason}")
    return is_audio_path(path)


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
