"""Audio files in and out: read (soundfile), resample (soxr), write atomically, peak helpers.

Audio arrays are float32 numpy ``[channels, samples]`` throughout; ``"-"`` means stdin or
stdout.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile
import soxr

from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.audio.rates import resampled_length
from lincae_cli.errors import LincaeError, first_line
from lincae_cli.paths import STDIN_NAME, is_stdio

RESAMPLE_QUALITY = "VHQ"

# File suffix -> (soundfile container, the subtype it means: None for the container's default).
_SUFFIX_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", None),
    ".oga": ("OGG", None),
    ".opus": ("OGG", "OPUS"),
    ".aiff": ("AIFF", None),
    ".aif": ("AIFF", None),
    ".aifc": ("AIFF", None),
    ".au": ("AU", None),
    ".caf": ("CAF", None),
    ".w64": ("W64", None),
    ".rf64": ("RF64", None),
    ".mp3": ("MP3", None),
}
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
"""The only rates Opus codes; other audio is written to .opus at 48 kHz, Opus's own rate."""


def _writable(container: str, subtype: str | None) -> bool:
    if container not in soundfile.available_formats():
        return False
    return subtype is None or subtype in soundfile.available_subtypes(container)


AUDIO_EXTENSIONS: dict[str, str] = {
    suffix: container
    for suffix, (container, subtype) in _SUFFIX_FORMATS.items()
    if _writable(container, subtype)
}
"""Suffix -> soundfile container, for the types this libsndfile writes (.opus: 1.0.29 on)."""


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a suffix we can read and write as audio (see `AUDIO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def unavailable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why this libsndfile cannot write ``path``'s audio type (``.opus`` without Opus), or
    None: the type is written, or not audio at all."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS or suffix in AUDIO_EXTENSIONS:
        return None
    container, subtype = _SUFFIX_FORMATS[suffix]
    version = soundfile.__libsndfile_version__
    if subtype == "OPUS":
        return (
            f"this libsndfile ({version}) cannot write Ogg Opus (it needs libsndfile 1.0.29 or "
            f"later, built with Opus); use .ogg (Vorbis) or .flac"
        )
    return f"this libsndfile ({version}) cannot write {container} files"


def output_container(path: str | os.PathLike[str]) -> str:
    """The soundfile container for an output path, from its suffix."""
    suffix = Path(path).suffix
    container = AUDIO_EXTENSIONS.get(suffix.lower())
    if container is None:
        reason = unavailable_reason(path)
        if reason is not None:
            raise LincaeError(f"{path}: {reason}")
        raise LincaeError(
            f"{path}: unknown audio file type {suffix!r}; "
            f"use one of {', '.join(AUDIO_EXTENSIONS)} (or .lat for latents)"
        )
    return container


def output_settings(
    path: str | os.PathLike[str], sample_rate: int, subtype: str | None, rate_given: bool
) -> tuple[int, str | None]:
    """The sample rate and subtype audio is written to ``path`` with: as given, except that a
    ``.opus`` file is Opus (subtype ``OPUS``), which takes only `OPUS_SAMPLE_RATES`: another
    rate of the source becomes 48 kHz, another rate asked for (``rate_given``) is an error."""
    subtype = subtype or _SUFFIX_FORMATS.get(Path(path).suffix.lower(), ("", None))[1]
    if subtype != "OPUS" or sample_rate in OPUS_SAMPLE_RATES:
        return sample_rate, subtype
    if rate_given:
        rates = ", ".join(str(rate) for rate in OPUS_SAMPLE_RATES)
        raise LincaeError(f"{path}: Opus takes {rates} Hz, not --sample-rate {sample_rate}")
    return OPUS_SAMPLE_RATES[-1], subtype


@contextmanager
def reading_errors(name: str) -> Iterator[None]:
    """Turn what libsndfile and the OS raise while reading ``name`` into one-line errors."""
    try:
        yield
    except MemoryError:
        # A corrupt header can claim an absurd number of frames.
        raise LincaeError(f"{name}: cannot read audio (corrupt length in header)") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise LincaeError(f"{name}: cannot read audio ({first_line(error)})") from None
    except OSError as error:
        raise LincaeError(f"{name}: cannot read ({error.strerror or error})") from None


def audio_from_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode an audio file held in memory; returns (float32 ``[channels, samples]``, rate)."""
    if not data:
        raise LincaeError(f"{name}: no audio data (empty input)")
    return _decode(io.BytesIO(data), name)


def read_audio(source: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read an audio file, or stdin for ``"-"``; returns (float32 ``[channels, samples]``, rate).

    Raises `LincaeError` naming the file if it is missing, unreadable, empty, or holds NaN/Inf.
    """
    if is_stdio(source):
        return audio_from_bytes(sys.stdin.buffer.read(), STDIN_NAME)
    path = Path(source)
    if not path.exists():
        raise LincaeError(f"{path}: no such file")
    if path.is_dir():
        raise LincaeError(f"{path}: is a directory, not an audio file")
    return _decode(path, str(path))


def _decode(file: Path | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    with reading_errors(name):
        samples, sample_rate = soundfile.read(file, dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(samples.T)
    if audio.shape[1] == 0:
        raise LincaeError(f"{name}: audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise LincaeError(f"{name}: audio contains NaN or Inf samples")
    return audio, int(sample_rate)


def resample(audio: np.ndarray, sample_rate_in: int, sample_rate_out: int) -> np.ndarray:
    """Resample float32 ``[channels, samples]`` with soxr (VHQ).

    The result is ``[channels, resampled_length(samples, in, out)]``; equal rates return the
    input unchanged.
    """
    if sample_rate_in <= 0 or sample_rate_out <= 0:
        raise LincaeError(f"cannot resample from {sample_rate_in} Hz to {sample_rate_out} Hz")
    if audio.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {audio.shape}")
    if sample_rate_in == sample_rate_out:
        return audio
    resampled = soxr.resample(
        np.ascontiguousarray(audio.T, dtype=np.float32),
        sample_rate_in,
        sample_rate_out,
        quality=RESAMPLE_QUALITY,
    )
    resampled = resampled.reshape(-1, audio.shape[0]).T
    # Pin the length so callers can rely on the formula whatever soxr's rounding.
    length = resampled_length(audio.shape[1], sample_rate_in, sample_rate_out)
    if resampled.shape[1] < length:
        resampled = np.pad(resampled, ((0, 0), (0, length - resampled.shape[1])))
    return np.ascontiguousarray(resampled[:, :length], dtype=np.float32)


def audio_to_bytes(
    audio: np.ndarray, sample_rate: int, container: str = "WAV", subtype: str | None = None
) -> bytes:
    """Encode ``[channels, samples]`` audio as a file in memory (WAV by default).

    ``container`` is a soundfile format name, as in `AUDIO_EXTENSIONS` values.

    ``subtype`` is a soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``...); None uses
    soundfile's default for the format (16-bit PCM for WAV/FLAC/AIFF).
    """
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"audio must be [channels, samples], got shape {audio.shape}")
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, audio.T, sample_rate, format=container, subtype=subtype)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise LincaeError(
            f"cannot encode {audio.shape[0]}-channel {sample_rate} Hz audio as {container}"
            f"{'/' + subtype if subtype else ''} ({first_line(error)})"
        ) from None
    return buffer.getvalue()


def write_audio(
    target: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> None:
    """Write ``[channels, samples]`` audio; the container comes from the suffix.

    ``"-"`` writes WAV bytes to stdout. A path is written atomically: a temporary file in
    the same directory, fsynced, then renamed over the target.
    """
    if is_stdio(target):
        sys.stdout.buffer.write(audio_to_bytes(audio, sample_rate, "WAV", subtype))
        sys.stdout.buffer.flush()
        return
    path = Path(target)
    container = output_container(path)
    subtype = subtype or _SUFFIX_FORMATS[path.suffix.lower()][1]
    try:
        data = audio_to_bytes(audio, sample_rate, container, subtype)
    except LincaeError as error:
        raise LincaeError(f"{path}: {error}") from None
    atomic_write_bytes(path, data)


def clip_report(audio: np.ndarray) -> tuple[float, int]:
    """(peak absolute sample value, number of samples with ``|x| > 1``) of any-shaped audio."""
    if audio.size == 0:
        return 0.0, 0
    magnitude = np.abs(audio)
    return float(magnitude.max()), int(np.count_nonzero(magnitude > 1.0))


def normalize_peak(audio: np.ndarray, target_peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale audio so its peak sits at ``target_peak_dbfs``; silence is returned unchanged."""
    peak, _ = clip_report(audio)
    if peak == 0.0:
        return audio
    target_peak = 10.0 ** (target_peak_dbfs / 20.0)
    return (audio * np.float32(target_peak / peak)).astype(np.float32)


def soft_limit(audio: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Soft-clip peaks: unchanged below ``threshold``, tanh knee above, never reaching 1.

    ``y = sign(x) * (t + (1 - t) * tanh((|x| - t) / (1 - t)))`` for ``|x| > t``; continuous
    with slope 1 at the knee, so quiet material is untouched.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    magnitude = np.abs(audio)
    headroom = 1.0 - threshold
    knee = threshold + headroom * np.tanh((magnitude - threshold) / headroom)
    limited = np.where(magnitude > threshold, np.sign(audio) * knee, audio)
    return limited.astype(np.float32)
