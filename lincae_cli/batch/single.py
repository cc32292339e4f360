"""One result (mix, gain, subtract and the editing commands): check its output before any work,
then write it as latents or decode it. Latent outputs need NumPy and safetensors only; the audio
and engine layers are imported when the output is audio."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lincae_cli.batch.plan import check_single_output
from lincae_cli.errors import LincaeError
from lincae_cli.paths import NULL_NAME, is_latent_path, is_stdio

if TYPE_CHECKING:
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.batch.files import Inference
    from lincae_cli.batch.result import BatchResult
    from lincae_cli.latents.latfile import LatentFile


def check_result_output(output: str, dtype: str, force: bool) -> None:
    """Before any work: ``output`` of a one-result job is a .lat or .npy, ``-``, or an audio
    file of a type this machine writes, and may be written."""
    from lincae_cli.latents.latfile import check_dtype

    check_dtype(dtype)
    if not (is_stdio(output) or is_latent_path(output)):
        from lincae_cli.audio.io import AUDIO_EXTENSIONS, is_audio_path, unavailable_reason

        reason = unavailable_reason(output)
        if reason is not None:
            raise LincaeError(f"{output}: {reason}")
        if not is_audio_path(output):
            raise LincaeError(
                f"{output}: unknown output type {Path(output).suffix!r}; use .lat, .npy or an "
                f"audio extension ({', '.join(sorted(AUDIO_EXTENSIONS))})"
            )
    check_single_output(output, force)


def save_result(
    lat: LatentFile,
    output: str | None,
    result: BatchResult,
    *,
    name: str | None = None,
    dtype: str = "float16",
    inference: Inference | None = None,
    audio: OutputOptions | None = None,
    fields: dict[str, Any] | None = None,
) -> None:
    """Write ``lat`` to ``output``: a .lat (or ``-``, a .lat on stdout), a .npy and its
    sidecar, audio decoded with ``inference.model`` or else the model recorded in ``lat``, or
    nothing (``output`` None: the null output of ``-n``, recorded as `NULL_NAME`). The record
    (input: ``name``, by default the command) gets ``fields`` when it is done."""
    fields = fields or {}
    name = name or result.command
    if output is None or is_stdio(output) or is_latent_path(output):
        if output is not None:
            from lincae_cli.latents.latfile import write_lat

            write_lat(output, lat, dtype=dtype)
        duration = round(lat.meta.duration_seconds, 6)
        rate = lat.meta.source_sample_rate
        shown = NULL_NAME if output is None else output
        result.ok(name, shown, duration_seconds=duration, sample_rate=rate, **fields)
        return
    from lincae_cli.batch.files import DecodeTarget, Inference, decode_targets
    from lincae_cli.batch.latent_inputs import decoding_model_for

    inference = inference or Inference()
    spec = inference.model or decoding_model_for(lat, output)
    decode_targets([DecodeTarget(name, output, lat, fields=fields)], spec, inference, audio, result)
