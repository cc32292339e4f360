"""Audio inputs read block by block, so that memory follows the chunk size, not the file.

An `AudioSource` knows its header facts at once (channels, rate, length) and yields its samples
later as checked float32 blocks resampled to the model rate by a streaming soxr resampler
(the same VHQ quality and length rule as `audio.io.resample`), measuring integrated loudness
on the way (`StreamingLoudness`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

from lincae_cli.audio.io import RESAMPLE_QUALITY, reading_errors, resampled_length
from lincae_cli.audio.loudness import StreamingLoudness
from lincae_cli.errors import LincaeError
from lincae_cli.paths import STDIN_NAME, is_lat_path, is_stdio

READ_BLOCK_SAMPLES = 1 << 16


class AudioSource:
    """An audio input: its header facts now, its samples block by block later.

    ``num_samples`` and ``sample_rate`` are the source's; `model_rate_blocks` yields exactly
    ``resampled_length(num_samples, sample_rate, model_rate)`` samples in total. After the
    blocks are exhausted, ``loudness_lufs`` holds the source's integrated loudness.
    """

    def __init__(self, name: str, channels: int, sample_rate: int, num_samples: int) -> None:
        self.name = name
        self.channels = channels
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.loudness_lufs: float | None = None

    @property
    def duration_seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def _source_blocks(self) -> Iterator[np.ndarray]:
        """Float32 ``[channels, n]`` blocks at the source rate, ``num_samples`` in total."""
        raise NotImplementedError

    def model_rate_blocks(self, model_rate: int) -> Iterator[np.ndarray]:
        """Checked float32 ``[channels, n]`` blocks resampled to ``model_rate``."""
        meter = StreamingLoudness(self.sample_rate, self.channels)
        total = resampled_length(self.num_samples, self.sample_rate, model_rate)
        resampler = (
            None
            if model_rate == self.sample_rate
            else soxr.ResampleStream(
                self.sample_rate, model_rate, self.channels, "float32", RESAMPLE_QUALITY
            )
        )
        emitted = 0
        for block in self._source_blocks():
            if not np.isfinite(block).all():
                raise LincaeError(f"{self.name}: audio contains NaN or Inf samples")
            meter.update(block)
            if resampler is not None:
                block = resampler.resample_chunk(np.ascontiguousarray(block.T)).T
            block = block[:, : total - emitted]
            emitted += block.shape[1]
            if block.shape[1]:
                yield np.ascontiguousarray(block, dtype=np.float32)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
            tail = tail.T[:, : total - emitted]
            emitted += tail.shape[1]
            if tail.shape[1]:
                yield np.ascontiguousarray(tail, dtype=np.float32)
        if emitted < total:  # pin the length, as `audio.io.resample` does
            yield np.zeros((self.channels, total - emitted), np.float32)
        self.loudness_lufs = meter.result()


class SoundFileSource(AudioSource):
    """A file libsndfile can read, from a path or from bytes (stdin)."""

    def __init__(self, name: str, file: Path | bytes) -> None:
        self.name = name
        self._file = file
        with self._open() as handle:
            channels, sample_rate, frames = handle.channels, handle.samplerate, handle.frames
        if frames <= 0:
            raise LincaeError(f"{name}: audio is empty (0 samples)")
        super().__init__(name, channels, sample_rate, frames)

    def _open(self) -> soundfile.SoundFile:
        file = io.BytesIO(self._file) if isinstance(self._file, bytes) else self._file
        with reading_errors(self.name):
            return soundfile.SoundFile(file)

    def _source_blocks(self) -> Iterator[np.ndarray]:
        remaining = self.num_samples
        with self._open() as handle:
            while remaining > 0:
                with reading_errors(self.name):
                    block = handle.read(
                        min(READ_BLOCK_SAMPLES, remaining), dtype="float32", always_2d=True
                    )
                if block.shape[0] == 0:
                    raise LincaeError(
                        f"{self.name}: audio ends after {self.num_samples - remaining} of "
                        f"{self.num_samples} samples (truncated or corrupt file)"
                    )
                remaining -= block.shape[0]
                yield block.T


class ArraySource(AudioSource):
    """Audio already in memory, ``[channels, samples]``."""

    def __init__(self, name: str, audio: np.ndarray, sample_rate: int) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.ndim != 2 or audio.shape[0] < 1:
            raise LincaeError(f"{name}: audio must be [channels, samples], got {audio.shape}")
        if audio.shape[1] == 0:
            raise LincaeError(f"{name}: audio is empty (0 samples)")
        if sample_rate <= 0:
            raise LincaeError(f"{name}: sample rate must be positive, got {sample_rate}")
        self._audio = audio
        super().__init__(name, audio.shape[0], int(sample_rate), audio.shape[1])

    def _source_blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.num_samples, READ_BLOCK_SAMPLES):
            yield self._audio[:, start : start + READ_BLOCK_SAMPLES]


def open_audio_source(
    path: str | os.PathLike[str], stdin_bytes: bytes | None = None
) -> AudioSource:
    """An `AudioSource` for a path, or for ``"-"`` with the bytes read from stdin.

    Reads only the header now; raises `LincaeError` naming the file if it is missing, a
    directory, not audio, or empty.
    """
    if is_stdio(path):
        if not stdin_bytes:
            raise LincaeError(f"{STDIN_NAME}: no audio data (empty input)")
        return SoundFileSource(STDIN_NAME, stdin_bytes)
    file = Path(path)
    if not file.exists():
        raise LincaeError(f"{file}: no such file")
    if file.is_dir():
        raise LincaeError(f"{file}: is a directory, not an audio file")
    if is_lat_path(file):
        raise LincaeError(f"{file}: is a latent file, not audio (decode it with `lincae decode`)")
    return SoundFileSource(str(file), file)
