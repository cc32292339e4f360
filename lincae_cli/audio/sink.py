"""Decoded audio out, block by block: resampled to the output rate, trimmed to the original
length, optionally soft-limited, and written as it comes (or held where the whole output is
needed first: peak normalisation, stdout, in-memory results).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from lincae_cli.atomic import AtomicFile
from lincae_cli.audio.io import (
    RESAMPLE_QUALITY,
    clip_report,
    normalize_peak,
    output_container,
    soft_limit,
    write_audio,
)
from lincae_cli.errors import LincaeError, first_line
from lincae_cli.paths import is_stdio, output_name

_WRITE_ERRORS = (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError)


@dataclass(frozen=True)
class OutputOptions:
    """How decoded audio is written. ``sample_rate`` None keeps the source rate."""

    sample_rate: int | None = None
    subtype: str | None = None
    normalize: bool = False
    limit: bool = False


@dataclass(frozen=True)
class SinkReport:
    """What was written: peak and clipped samples (``|x| > 1``) of the written audio; the
    audio itself for an in-memory sink."""

    sample_rate: int
    num_samples: int
    peak: float
    clipped_samples: int
    audio: np.ndarray | None = None


class StreamedAudioFile:
    """An audio file written block by block into a temporary file, renamed over the target by
    `commit`; `discard` leaves the target as it was. Opened at the first block."""

    def __init__(
        self, path: str | os.PathLike[str], channels: int, sample_rate: int, subtype: str | None
    ) -> None:
        self.path = os.fspath(path)
        self.container = output_container(path)
        self._settings = {"samplerate": sample_rate, "channels": channels, "subtype": subtype}
        self._atomic: AtomicFile | None = None
        self._file: soundfile.SoundFile | None = None

    def write(self, block: np.ndarray) -> None:
        """Append float32 ``[channels, n]``."""
        if self._file is None:
            self._open()
        assert self._file is not None
        try:
            self._file.write(block.T)
        except _WRITE_ERRORS as error:
            raise LincaeError(f"{self.path}: cannot write ({first_line(error)})") from None

    def _open(self) -> None:
        try:
            self._atomic = AtomicFile(self.path)
            self._file = soundfile.SoundFile(
                self._atomic.temporary, "w", format=self.container, **self._settings
            )
        except _WRITE_ERRORS as error:
            self.discard()
            reason = error.strerror if isinstance(error, OSError) else first_line(error)
            raise LincaeError(f"{self.path}: cannot write ({reason or error})") from None

    def commit(self) -> None:
        """Finish the file and put it in place (an empty file if nothing was written)."""
        if self._file is None:
            self._open()
        assert self._file is not None and self._atomic is not None
        self._file.close()
        self._file = None
        try:
            self._atomic.commit()
        except OSError as error:
            raise LincaeError(f"{self.path}: cannot write ({error.strerror or error})") from None

    def discard(self) -> None:
        """Drop what was written; the target is left as it was."""
        if self._file is not None:
            try:
                self._file.close()
            except _WRITE_ERRORS:
                pass
            self._file = None
        if self._atomic is not None:
            self._atomic.discard()


class AudioSink:
    """Receives decoded model-rate blocks in order and writes the output audio.

    ``target``: a path (written atomically; streamed unless ``normalize``), ``"-"`` (WAV on
    stdout, written at the end) or None (kept in memory: ``close().audio``). The output is
    resampled to ``sample_rate`` and trimmed or padded to ``num_samples``.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | None,
        channels: int,
        model_rate: int,
        sample_rate: int,
        num_samples: int,
        options: OutputOptions,
    ) -> None:
        self.target = target
        self.channels = channels
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.options = options
        self._resampler = (
            None
            if model_rate == sample_rate
            else soxr.ResampleStream(model_rate, sample_rate, channels, "float32", RESAMPLE_QUALITY)
        )
        self._written = 0
        self._peak = 0.0
        self._clipped = 0
        # Peak normalisation, stdout and memory need the whole output before it goes out.
        to_file = target is not None and not is_stdio(target)
        self._stream = (
            StreamedAudioFile(target, channels, sample_rate, options.subtype)  # type: ignore[arg-type]
            if to_file and not options.normalize
            else None
        )
        if to_file and self._stream is None:
            output_container(target)  # type: ignore[arg-type]  # an unknown suffix fails now
        self._held: list[np.ndarray] = []

    @property
    def name(self) -> str:
        return "<memory>" if self.target is None else output_name(self.target)

    def write(self, block: np.ndarray) -> None:
        """Take model-rate ``[channels, n]`` audio, the next stretch of the output."""
        if self._resampler is not None:
            block = self._resampler.resample_chunk(np.ascontiguousarray(block.T)).T
        self._emit(block)

    def _emit(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block[:, : self.num_samples - self._written], np.float32)
        if not block.shape[1]:
            return
        self._written += block.shape[1]
        if self.options.limit:
            block = soft_limit(block)
        if self._stream is None:
            self._held.append(block)
            return
        self._count_clipping(block)
        self._stream.write(block)

    def _count_clipping(self, block: np.ndarray) -> None:
        peak, clipped = clip_report(block)
        self._peak = max(self._peak, peak)
        self._clipped += clipped

    def close(self) -> SinkReport:
        """Flush everything, finish the output and report."""
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros((0, self.channels), np.float32), True)
            self._emit(tail.T)
        if self._written < self.num_samples:
            self._emit(np.zeros((self.channels, self.num_samples - self._written), np.float32))
        if self._stream is not None:
            self._stream.commit()
            return SinkReport(self.sample_rate, self._written, self._peak, self._clipped)
        audio = np.concatenate(self._held, axis=1) if self._held else np.zeros((self.channels, 0))
        self._held = []
        if self.options.normalize:
            audio = normalize_peak(audio)
        self._count_clipping(audio)
        report = SinkReport(self.sample_rate, self._written, self._peak, self._clipped)
        if self.target is None:
            return dataclasses.replace(report, audio=audio)
        write_audio(self.target, audio, self.sample_rate, self.options.subtype)
        return report

    def abort(self) -> None:
        """Drop a half-written output: the target is left as it was."""
        self._held = []
        if self._stream is not None:
            self._stream.discard()
