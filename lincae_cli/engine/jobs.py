"""Encode and decode jobs: one file's way through the engine, with explicit state.

A job cuts its input into the windows of its chunk plan (`windows`, called on the reader
thread), takes the model's output for each window back (`accept`), and builds its result
(`complete`). It is OPEN until it completes (DONE), fails (FAILED: `error` says why) or is
abandoned with the run (ABORTED); a job that is not open produces nothing and leaves no
partial output behind.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lincae_cli.audio.rates import resampled_length
from lincae_cli.audio.sink import AudioSink, SinkReport
from lincae_cli.audio.sources import AudioSource
from lincae_cli.engine.chunks import (
    ChunkSpec,
    OverlapAdd,
    Window,
    cut_windows,
    finished_until,
    plan_chunks,
    window_weights,
)
from lincae_cli.errors import LincaeError
from lincae_cli.latents.framing import (
    FRAMING_KEYS,
    encoded_stft_frames,
    framing_of,
    latent_frames_for_samples,
)
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry
from lincae_cli.nn.autoencoder import decoding_noise
from lincae_cli.nn.config import ModelConfig


@dataclass(frozen=True)
class Framing:
    """What jobs need to know of the engine that runs them: the model's layout, the chunking,
    the decoding seed and what to record in provenance."""

    config: ModelConfig
    spec: ChunkSpec
    seed: int
    model_name: str
    model_sha256: str
    precision: str
    device_type: str
    silence_latent: list[float] | None = None  # recorded in every .lat encoded (affine ops)
    affine_default: bool = False

    @property
    def latent_hop(self) -> int:
        return self.config.latent_hop_samples

    @property
    def overhang(self) -> int:
        """Samples past frame k's own ``H`` that its last STFT frame reaches: n_fft - hop."""
        return self.config.n_fft - self.config.hop

    @property
    def stft_metadata(self) -> dict[str, int | str]:
        """How the audio was framed, for the ``chunking`` entry of a .lat: STFT frame 0 starts
        at the audio's first sample (the reference packages' framing), hop, n_fft and the
        model's latent frame rounding (which give the frame count, see `latent_frames`)."""
        config = self.config
        values = (0, config.hop, config.n_fft, config.latent_frame_rounding)
        return dict(zip(FRAMING_KEYS, values, strict=True))

    def latent_frames(self, num_samples: int) -> int:
        config = self.config
        return latent_frames_for_samples(
            num_samples,
            config.hop,
            config.n_fft,
            config.frames_per_latent,
            config.latent_frame_rounding,
        )

    def encoded_stft_frames(self, num_samples: int) -> int:
        """STFT frames of ``num_samples`` that the latents are computed from (the model's
        rounding: a "floor" model leaves out the frames after the last whole latent frame)."""
        config = self.config
        return encoded_stft_frames(
            num_samples,
            config.hop,
            config.n_fft,
            config.frames_per_latent,
            config.latent_frame_rounding,
        )


class JobState(enum.Enum):
    OPEN = "open"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass
class WindowItem:
    """One window of one channel of one job, ready for the model."""

    job: Job
    window: Window
    channel: int
    data: torch.Tensor  # encode: audio [samples]; decode: latents [latent_channels, frames]
    valid: int  # real frames of `data`, the rest is padding: encode STFT frames, decode latent
    noise: torch.Tensor | None = None  # decode: [2, freq_bins, frames · frames_per_latent]


class Job:
    """What encode and decode jobs share: identity, plan, state and its transitions."""

    kind: str

    def __init__(
        self, framing: Framing, name: str, duration_seconds: float, channels: int, frames: int
    ) -> None:
        self.framing = framing
        self.name = name
        self.duration_seconds = duration_seconds
        self.channels = channels
        self.frames = frames
        self.plan = plan_chunks(frames, framing.spec)
        self.total_items = len(self.plan) * channels
        self.state = JobState.OPEN
        self.error: LincaeError | None = None

    @property
    def is_open(self) -> bool:
        return self.state is JobState.OPEN

    def seconds_of(self, item: WindowItem) -> float:
        """The seconds of audio one item stands for (for progress)."""
        core = item.window.core_stop - item.window.core_start
        return self.duration_seconds * core / self.frames / self.channels

    def windows(self) -> Iterator[WindowItem]:
        raise NotImplementedError

    def accept(self, item: WindowItem, output: np.ndarray) -> None:
        raise NotImplementedError

    def _result(self) -> Any:
        raise NotImplementedError

    def _discard(self) -> None:
        """Drop any partial output."""

    def complete(self) -> Any:
        """The result, once every window was accepted; the job is DONE."""
        result = self._result()
        self.state = JobState.DONE
        return result

    def fail(self, error: LincaeError) -> None:
        """The job cannot finish: FAILED with ``error``, its partial output dropped."""
        if self.is_open:
            self.state, self.error = JobState.FAILED, error
            self._discard()

    def abort(self) -> None:
        """The run stopped before this job finished: ABORTED, partial output dropped."""
        if self.is_open:
            self.state = JobState.ABORTED
            self._discard()


class EncodeJob(Job):
    """Audio source -> `LatentFile` (per-channel latents at the model's latent rate)."""

    kind = "encode"

    def __init__(self, framing: Framing, source: AudioSource, input_name: str | None = None):
        model_rate = framing.config.sample_rate
        self.model_samples = resampled_length(source.num_samples, source.sample_rate, model_rate)
        frames = framing.latent_frames(self.model_samples)
        super().__init__(framing, source.name, source.duration_seconds, source.channels, frames)
        self.source = source
        self.input_name = input_name or source.name
        self._latents = OverlapAdd(
            source.channels, frames, (framing.config.latent_channels,), reserve=frames
        )

    def windows(self) -> Iterator[WindowItem]:
        framing, config = self.framing, self.framing.config
        hop = framing.latent_hop
        # A window of W latent frames is 2^d·W STFT frames: W·H + overhang samples.
        spans = [(w.start * hop, (w.start + w.frames) * hop + framing.overhang) for w in self.plan]
        blocks = self.source.model_rate_blocks(config.sample_rate)
        # Real STFT frames of the file: for a "floor" model, those after the last whole
        # latent frame are not encoded (they are padding, as music2latent crops them).
        encoded = framing.encoded_stft_frames(self.model_samples)
        for window, audio in zip(self.plan, cut_windows(blocks, spans, self.channels), strict=True):
            data = torch.from_numpy(audio)
            valid = min(
                encoded - window.start * config.frames_per_latent,
                window.frames * config.frames_per_latent,
            )
            for channel in range(self.channels):
                yield WindowItem(self, window, channel, data[channel], valid)

    def accept(self, item: WindowItem, output: np.ndarray) -> None:
        weights = window_weights(item.window, self.framing.spec, unit=1)
        values = output[:, weights.begin : weights.end] * weights.values
        self._latents.add(item.channel, item.window.start + weights.begin, values)

    def _result(self) -> LatentFile:
        framing, config = self.framing, self.framing.config
        meta = LatentMeta(
            model_name=framing.model_name,
            model_sha256=framing.model_sha256,
            scale_factor=config.scale_factor,
            model_sample_rate=config.sample_rate,
            source_sample_rate=self.source.sample_rate,
            num_samples=self.source.num_samples,
            channels=self.channels,
            latent_rate_hz=config.latent_rate_hz,
            latent_hop_samples=framing.latent_hop,
            chunking={**framing.spec.to_metadata(config.latent_rate_hz), **framing.stft_metadata},
            source_loudness_lufs=self.source.loudness_lufs,
            loudness_is_estimate=False,
            silence_latent=framing.silence_latent,
            affine_default=framing.affine_default,
            provenance=[
                provenance_entry(
                    "encode",
                    input=self.input_name,
                    precision=framing.precision,
                    device=framing.device_type,
                )
            ],
        )
        return LatentFile(latents=self._latents.release(self.frames), meta=meta)


class DecodeJob(Job):
    """`LatentFile` -> audio written through an `AudioSink` as the chunks complete."""

    kind = "decode"

    def __init__(self, framing: Framing, lat: LatentFile, sink: AudioSink, name: str) -> None:
        super().__init__(framing, name, lat.meta.duration_seconds, lat.channels, lat.frames)
        meta = lat.meta
        self.lat = lat
        self.sink = sink
        hop = framing.latent_hop
        # Where STFT frame 0 starts relative to the audio (model-rate samples): 0 since the
        # reference framing; files from lincae before it centred the frames, -(n_fft - hop)/2.
        legacy = framing_of(meta.chunking) is None
        self._skip = framing.overhang // 2 if legacy else 0  # decoded samples before sample 0
        # The last frame's STFT frames reach `overhang` samples past it (reference framing).
        reach = self.frames * hop + (framing.overhang if self._skip == 0 else 0)
        self.model_samples = min(reach, meta.model_rate_samples)  # offset_samples included
        self._audio = OverlapAdd(lat.channels, self.model_samples)
        self._received: dict[int, int] = {}  # window index -> channels accepted

    def windows(self) -> Iterator[WindowItem]:
        framing = self.framing
        latents = torch.from_numpy(self.lat.latents)
        for window in self.plan:
            width = window.frames
            chunk = torch.zeros(self.channels, self.lat.latent_channels, width)
            hi = min(window.start + width, self.frames)
            chunk[:, :, : hi - window.start] = latents[:, :, window.start : hi]
            noise = decoding_noise(framing.config, framing.seed, window.start, width)
            for channel in range(self.channels):
                yield WindowItem(self, window, channel, chunk[channel], hi - window.start, noise)

    def accept(self, item: WindowItem, output: np.ndarray) -> None:
        """``output``: the decoded window, `[window_frames·H + overhang]` samples from the
        window's first STFT frame on."""
        window, hop = item.window, self.framing.latent_hop
        audio = output[self._skip :]
        weights = window_weights(window, self.framing.spec, unit=hop)
        values = audio[weights.begin : weights.end] * weights.values
        self._audio.add(item.channel, window.start * hop + weights.begin, values)
        if window.is_last:  # the end of the file: what the last STFT frames reach past it
            self._audio.add(item.channel, window.core_stop * hop, audio[weights.end :])
        self._received[window.index] = self._received.get(window.index, 0) + 1
        if self._received[window.index] == self.channels:  # every channel: write what is final
            until = finished_until(window, self.framing.spec, self.model_samples, hop)
            self.sink.write(self._audio.release(until))

    def _result(self) -> SinkReport:
        self.sink.write(self._audio.release(self.model_samples))
        return self.sink.close()

    def _discard(self) -> None:
        self.sink.abort()
