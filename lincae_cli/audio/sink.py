"""Decoded audio out, block by block: resampled to the output rate, trimmed to the original
length, optionally brought to a recorded loudness and soft-limited, and written as it comes (or
held where the whole output is needed first: peak normalisation, stdout, in-memory results).

Restoring a loudness takes two passes over the output, not over the model: the first measures
it (`StreamingLoudness`) while the blocks are spooled to an anonymous temporary file beside the
target (memory stays bounded whatever the length), the second scales them by one gain on their
way into the file.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

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

if TYPE_CHECKING:  # loudness (pyloudnorm, scipy) is imported only by outputs that measure it
    from lincae_cli.audio.loudness import StreamingLoudness

_WRITE_ERRORS = (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError)


@dataclass(frozen=True)
class OutputOptions:
    """How decoded audio is written. ``sample_rate`` None keeps the source rate.
    ``restore_loudness``: bring the output to the loudness its `.lat` records (None: the
    decoding model's default, which the engine applies)."""

    sample_rate: int | None = None
    subtype: str | None = None
    normalize: bool = False
    limit: bool = False
    restore_loudness: bool | None = None


@dataclass(frozen=True)
class SinkReport:
    """What was written: peak and clipped samples (``|x| > 1``) of the written audio; the
    gain in dB that restored the recorded loudness (None: not restored); the audio itself for
    an in-memory sink."""

    sample_rate: int
    num_samples: int
    peak: float
    clipped_samples: int
    audio: np.ndarray | None = None
    loudness_gain_db: float | None = None


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


class HeldBlocks:
    """Output blocks `[channels, n]` kept until the output is complete: in memory, or (with
    ``spool_dir``) spooled as float32 to an anonymous temporary file there, which the system
    deletes when it is closed, even after a crash."""

    def __init__(self, channels: int, spool_dir: str | None, name: str) -> None:
        self.channels = channels
        self.name = name
        self._spool_dir = spool_dir
        self._spool: IO[bytes] | None = None
        self._blocks: collections.deque[np.ndarray] = collections.deque()

    def add(self, block: np.ndarray) -> None:
        if self._spool_dir is None:
            self._blocks.append(block)
            return
        try:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile(dir=self._spool_dir)
            self._spool.write(np.ascontiguousarray(block.T, np.float32).tobytes())
        except OSError as error:
            self.close()
            raise LincaeError(f"{self.name}: cannot write ({error.strerror or error})") from None

    def drain(self, block_frames: int = 1 << 16) -> Iterator[np.ndarray]:
        """The blocks in order (spooled ones re-read ``block_frames`` at a time), each let go
        once yielded."""
        while self._blocks:
            yield self._blocks.popleft()
        if self._spool is None:
            return
        self._spool.seek(0)
        while data := self._spool.read(block_frames * self.channels * 4):
            yield np.frombuffer(data, np.float32).reshape(-1, self.channels).T
        self.close()

    def close(self) -> None:
        self._blocks.clear()
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class AudioSink:
    """Receives decoded model-rate blocks in order and writes the output audio.

    ``target``: a path (written atomically; streamed unless ``normalize``), ``"-"`` (WAV on
    stdout, written at the end) or None (kept in memory: ``close().audio``). The output is
    resampled to ``sample_rate``; its first ``skip_samples`` are dropped (a `.lat`'s
    ``offset_samples``), the rest trimmed or padded to ``num_samples``. With ``target_lufs``
    (and without ``normalize``, which sets the level itself) the output is scaled to that
    integrated loudness before ``limit`` applies: measured whole first, then written (see
    the module docstring).
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | None,
        channels: int,
        model_rate: int,
        sample_rate: int,
        num_samples: int,
        options: OutputOptions,
        skip_samples: int = 0,
        target_lufs: float | None = None,
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
        self._to_skip = skip_samples
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
        self._target_lufs = None if options.normalize else target_lufs
        self._meter: StreamingLoudness | None = None
        self._pending: HeldBlocks | None = None
        if self._target_lufs is not None:
            from lincae_cli.audio.loudness import StreamingLoudness

            self._meter = StreamingLoudness(sample_rate, channels)
            spool_dir = (
                os.path.dirname(os.path.abspath(target))  # type: ignore[arg-type]
                if self._stream is not None
                else None  # held anyway: stdout, memory
            )
            self._pending = HeldBlocks(channels, spool_dir, self.name)

    @property
    def name(self) -> str:
        return "<memory>" if self.target is None else output_name(self.target)

    def write(self, block: np.ndarray) -> None:
        """Take model-rate ``[channels, n]`` audio, the next stretch of the output."""
        if self._resampler is not None:
            block = self._resampler.resample_chunk(np.ascontiguousarray(block.T)).T
        self._emit(block)

    def _emit(self, block: np.ndarray) -> None:
        if self._to_skip:
            dropped = min(self._to_skip, block.shape[1])
            block, self._to_skip = block[:, dropped:], self._to_skip - dropped
        block = np.ascontiguousarray(block[:, : self.num_samples - self._written], np.float32)
        if not block.shape[1]:
            return
        self._written += block.shape[1]
        if self._pending is not None and self._meter is not None:  # restoring: hold it
            self._meter.update(block)
            self._pending.add(block)
            return
        self._output(block)

    def _output(self, block: np.ndarray) -> None:
        """The last steps of a block: the limiter, then the file or the held audio."""
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
            missing = self._to_skip + self.num_samples - self._written
            self._emit(np.zeros((self.channels, missing), np.float32))
        gain_db = self._restore()
        if self._stream is not None:
            self._stream.commit()
            return SinkReport(
                self.sample_rate, self._written, self._peak, self._clipped, None, gain_db
            )
        audio = np.concatenate(self._held, axis=1) if self._held else np.zeros((self.channels, 0))
        self._held = []
        if self.options.normalize:
            audio = normalize_peak(audio)
        self._count_clipping(audio)
        report = SinkReport(
            self.sample_rate, self._written, self._peak, self._clipped, None, gain_db
        )
        if self.target is None:
            return dataclasses.replace(report, audio=audio)
        write_audio(self.target, audio, self.sample_rate, self.options.subtype)
        return report

    def _restore(self) -> float | None:
        """Scale the pending output to the target loudness and send it on; the gain in dB
        (None when nothing was restored)."""
        if self._meter is None or self._pending is None:
            return None
        measured = self._meter.result()  # None: too short or silent to measure, left alone
        from lincae_cli.audio.loudness import restoring_gain

        gain = restoring_gain(measured, self._target_lufs)
        for block in self._pending.drain():
            self._output(block * np.float32(gain))
        return None if measured is None else 20.0 * float(np.log10(gain))

    def abort(self) -> None:
        """Drop a half-written output: the target is left as it was."""
        self._held = []
        if self._pending is not None:
            self._pending.close()
        if self._stream is not None:
            self._stream.discard()
