"""Audio in and out block by block, so that memory follows the chunk size, not the file.

`AudioSource` reads an audio file (or bytes, or an array) in blocks, checks them, measures
their integrated loudness on the way (`StreamingLoudness`) and resamples them to the model
rate with a streaming soxr resampler. `AudioSink` takes decoded model-rate blocks, resamples
them to the output rate, trims them to the original length and writes them (atomically) as
they come; ``--normalize``, stdout and in-memory results are held whole instead.

These mirror `lincae_cli.audio.io` and `lincae_cli.audio.loudness` (same errors, same VHQ
resampler and length rule, same BS.1770 maths as pyloudnorm) for streams instead of arrays.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soundfile
import soxr
from pyloudnorm.iirfilter import IIRfilter

from lincae_cli.atomic import atomic_output
from lincae_cli.audio.io import (
    AUDIO_EXTENSIONS,
    RESAMPLE_QUALITY,
    STDIO_NAME,
    audio_to_bytes,
    clip_report,
    normalize_peak,
    resampled_length,
    soft_limit,
)
from lincae_cli.audio.loudness import MAX_CHANNELS, MIN_DURATION_SECONDS
from lincae_cli.errors import LincaeError

READ_BLOCK_SAMPLES = 1 << 16
# K-weighting stages as pyloudnorm parameterises them: (gain dB, Q, centre Hz) per filter type.
_K_WEIGHTING = {"high_shelf": (4.0, 1 / math.sqrt(2), 1500.0), "high_pass": (0.0, 0.5, 38.0)}
# BS.1770 gating: 400 ms blocks every 100 ms, absolute gate -70 LUFS, relative gate -10 LU.
_GATE_BLOCK_SECONDS = 0.4
_GATE_STEP = 0.25
_ABSOLUTE_GATE_LUFS = -70.0
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


class StreamingLoudness:
    """Integrated loudness (ITU-R BS.1770) of audio fed in blocks; pyloudnorm's maths.

    pyloudnorm measures whole arrays (a float64 copy of the file, then filtered copies); this
    keeps only the K-weighting filter state and one energy sum per 100 ms per channel, and
    gates at the end exactly as `pyloudnorm.Meter.integrated_loudness` does.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        # BS.1770 K-weighting through pyloudnorm's public IIRfilter: high shelf, then high pass.
        self._stages = [
            (stage.b, stage.a, stage.passband_gain)
            for stage in (
                IIRfilter(*params, sample_rate, kind) for kind, params in _K_WEIGHTING.items()
            )
        ]
        self._states = [np.zeros((channels, max(len(a), len(b)) - 1)) for b, a, _ in self._stages]
        self._count = 0
        self._segment_sums: list[np.ndarray] = []
        self._current = np.zeros(channels)

    def _boundary(self, segment: int) -> int:
        # Same float expression as pyloudnorm's block bounds, so the blocks match exactly.
        return int(_GATE_BLOCK_SECONDS * (segment * _GATE_STEP) * self.sample_rate)

    def update(self, block: np.ndarray) -> None:
        """Feed ``[channels, n]`` samples."""
        filtered = block.astype(np.float64)
        for index, (b, a, gain) in enumerate(self._stages):
            filtered, self._states[index] = scipy.signal.lfilter(
                b, a, filtered, axis=-1, zi=self._states[index]
            )
            filtered = gain * filtered
        squares = filtered * filtered
        position, end = self._count, self._count + block.shape[-1]
        while position < end:
            segment_end = self._boundary(len(self._segment_sums) + 1)
            stop = min(segment_end, end)
            self._current += squares[:, position - self._count : stop - self._count].sum(axis=-1)
            position = stop
            if position == segment_end:
                self._segment_sums.append(self._current)
                self._current = np.zeros(self.channels)
        self._count = end

    def result(self) -> float | None:
        """LUFS, or None where `integrated_loudness` gives None (short, silent, > 5 channels)."""
        rate = self.sample_rate
        if self.channels > MAX_CHANNELS or self._count < MIN_DURATION_SECONDS * rate:
            return None
        segments = np.array([*self._segment_sums, self._current]).T  # [channels, segments]
        duration = self._count / rate
        blocks = int(
            np.round((duration - _GATE_BLOCK_SECONDS) / (_GATE_BLOCK_SECONDS * _GATE_STEP))
        )
        blocks += 1
        per_block = round(1 / _GATE_STEP)
        padded = np.pad(segments, ((0, 0), (0, max(0, blocks + per_block - segments.shape[1]))))
        energy = sum(padded[:, k : k + blocks] for k in range(per_block))
        energy = energy / (_GATE_BLOCK_SECONDS * rate)  # [channels, blocks]
        weights = np.array(_CHANNEL_WEIGHTS[: self.channels])[:, None]
        with np.errstate(divide="ignore"):
            block_lufs = -0.691 + 10.0 * np.log10((weights * energy).sum(axis=0))
        above_absolute = block_lufs >= _ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return None
        relative_gate = _lufs(weights, energy[:, above_absolute]) - 10.0
        gated = (block_lufs > relative_gate) & (block_lufs > _ABSOLUTE_GATE_LUFS)
        if not gated.any():
            return None
        loudness = _lufs(weights, energy[:, gated])
        return loudness if math.isfinite(loudness) else None


def _lufs(weights: np.ndarray, energy: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(-0.691 + 10.0 * np.log10((weights[:, 0] * energy.mean(axis=-1)).sum()))


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
        try:
            return soundfile.SoundFile(file)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            raise LincaeError(f"{self.name}: cannot read audio ({_first_line(error)})") from None
        except OSError as error:
            raise LincaeError(f"{self.name}: cannot read ({error.strerror or error})") from None

    def _source_blocks(self) -> Iterator[np.ndarray]:
        remaining = self.num_samples
        with self._open() as handle:
            while remaining > 0:
                try:
                    block = handle.read(
                        min(READ_BLOCK_SAMPLES, remaining), dtype="float32", always_2d=True
                    )
                except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
                    raise LincaeError(
                        f"{self.name}: cannot read audio ({_first_line(error)})"
                    ) from None
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
    if os.fspath(path) == STDIO_NAME:
        if not stdin_bytes:
            raise LincaeError("<stdin>: no audio data (empty input)")
        return SoundFileSource("<stdin>", stdin_bytes)
    file = Path(path)
    if not file.exists():
        raise LincaeError(f"{file}: no such file")
    if file.is_dir():
        raise LincaeError(f"{file}: is a directory, not an audio file")
    if file.suffix.lower() == ".lat":
        raise LincaeError(f"{file}: is a latent file, not audio (decode it with `lincae decode`)")
    return SoundFileSource(str(file), file)


@dataclass(frozen=True)
class OutputOptions:
    """How decoded audio is written. ``sample_rate`` None keeps the source rate."""

    sample_rate: int | None = None
    subtype: str | None = None
    normalize: bool = False
    limit: bool = False


@dataclass(frozen=True)
class SinkReport:
    """What was written: peak and clipped samples (``|x| > 1``) of the written audio."""

    sample_rate: int
    num_samples: int
    peak: float
    clipped_samples: int
    audio: np.ndarray | None = None


class AudioSink:
    """Receives decoded model-rate blocks in order and writes the output audio.

    ``target``: a path (written atomically, streamed unless ``normalize``), ``"-"`` (WAV on
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
        self._held: list[np.ndarray] = []
        self._file: soundfile.SoundFile | None = None
        self._atomic: Any = None
        to_file = target is not None and os.fspath(target) != STDIO_NAME
        self.container = output_container(Path(target)) if to_file else "WAV"  # type: ignore[arg-type]
        # Peak normalisation needs the whole output before the first sample is written.
        self._streaming = to_file and not options.normalize

    @property
    def name(self) -> str:
        if self.target is None:
            return "<memory>"
        return "<stdout>" if os.fspath(self.target) == STDIO_NAME else os.fspath(self.target)

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
        if not self._streaming:
            self._held.append(block)
            return
        self._count_clipping(block)
        if self._file is None:
            self._open_file()
        assert self._file is not None
        try:
            self._file.write(block.T)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise LincaeError(f"{self.name}: cannot write ({_first_line(error)})") from None

    def _count_clipping(self, block: np.ndarray) -> None:
        peak, clipped = clip_report(block)
        self._peak = max(self._peak, peak)
        self._clipped += clipped

    def _open_file(self) -> None:
        assert self.target is not None
        self._atomic = atomic_output(self.target)
        try:
            temporary = self._atomic.__enter__()
            self._file = soundfile.SoundFile(
                temporary,
                "w",
                samplerate=self.sample_rate,
                channels=self.channels,
                format=self.container,
                subtype=self.options.subtype,
            )
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as error:
            self.abort()
            reason = error.strerror if isinstance(error, OSError) else _first_line(error)
            raise LincaeError(f"{self.name}: cannot write ({reason or error})") from None

    def close(self) -> SinkReport:
        """Flush everything, finish the file and report."""
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros((0, self.channels), np.float32), True)
            self._emit(tail.T)
        if self._written < self.num_samples:
            self._emit(np.zeros((self.channels, self.num_samples - self._written), np.float32))
        if self._streaming:
            if self._file is None:
                self._open_file()
            assert self._file is not None
            self._file.close()
            self._file = None
            try:
                self._atomic.__exit__(None, None, None)
            except OSError as error:
                raise LincaeError(
                    f"{self.name}: cannot write ({error.strerror or error})"
                ) from None
            return SinkReport(self.sample_rate, self._written, self._peak, self._clipped)
        audio = np.concatenate(self._held, axis=1) if self._held else np.zeros((self.channels, 0))
        self._held = []
        if self.options.normalize:
            audio = normalize_peak(audio)
        self._count_clipping(audio)
        if self.target is not None:
            self._write_whole(audio)
            audio_out = None
        else:
            audio_out = audio
        return SinkReport(self.sample_rate, self._written, self._peak, self._clipped, audio_out)

    def _write_whole(self, audio: np.ndarray) -> None:
        assert self.target is not None
        data = audio_to_bytes(audio, self.sample_rate, self.container, self.options.subtype)
        if os.fspath(self.target) == STDIO_NAME:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        try:
            with atomic_output(self.target) as temporary:
                temporary.write_bytes(data)
        except OSError as error:
            raise LincaeError(f"{self.name}: cannot write ({error.strerror or error})") from None

    def abort(self) -> None:
        """Drop a half-written output: the target is left as it was."""
        self._held = []
        if self._file is not None:
            try:
                self._file.close()
            except (soundfile.LibsndfileError, RuntimeError, OSError):
                pass
            self._file = None
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            try:
                atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass


def output_container(path: Path) -> str:
    """The soundfile container for an output path, from its suffix."""
    container = AUDIO_EXTENSIONS.get(path.suffix.lower())
    if container is None:
        raise LincaeError(
            f"{path}: unknown audio file type {path.suffix!r}; "
            f"use one of {', '.join(AUDIO_EXTENSIONS)} (or .lat for latents)"
        )
    return container


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
