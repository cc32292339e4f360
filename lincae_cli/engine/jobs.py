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

from lincae_cli.audio.io import resampled_length
from lincae_cli.audio.sink import AudioSink, SinkReport
from lincae_cli.audio.sources import AudioSource
from lincae_cli.engine.chunks import (
    ChunkSpec,
    OverlapAdd,
    Window,
    cut_windows,
    finished_until,
    latent_frames_for_samples,
    plan_chunks,
    window_weights,
)
from lincae_cli.errors import LincaeError
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

    @property
    def latent_hop(self) -> int:
        return self.config.latent_hop_samples

    @property
    def alignment_offset(self) -> int:
        """Left padding that centres STFT frame j on sample j·hop + hop/2, so that latent frame
        k covers samples [k·H, (k+1)·H)."""
        return (self.config.n_fft - self.config.hop) // 2


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
        frames = latent_frames_for_samples(self.model_samples, framing.latent_hop)
        super().__init__(framing, source.name, source.duration_seconds, source.channels, frames)
        self.source = source
        self.input_name = input_name or source.name
        self._latents = OverlapAdd(
            source.channels, frames, (framing.config.latent_channels,), reserve=frames
        )

    def windows(self) -> Iterator[WindowItem]:
        framing = self.framing
        hop, pad, width = framing.latent_hop, framing.alignment_offset, framing.spec.window_frames
        spans = [(w.start * hop - pad, (w.start + width) * hop + pad) for w in self.plan]
        blocks = self.source.model_rate_blocks(framing.config.sample_rate)
        for window, audio in zip(self.plan, cut_windows(blocks, spans, self.channels), strict=True):
            data = torch.from_numpy(audio)
            for channel in range(self.channels):
                yield WindowItem(self, window, channel, data[channel])

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
            chunking=framing.spec.to_metadata(config.latent_rate_hz),
            source_loudness_lufs=self.source.loudness_lufs,
            loudness_is_estimate=False,
            provenance=[
                provenance_entry(
                    "encode",
                    input=self.input_name,
                    precision=framing.precision,
                    device=framing.device_type,
                )
            ],
        )
        latents = torch.from_numpy(self._latents.release(self.frames))
        return LatentFile(latents=latents, meta=meta)


class DecodeJob(Job):
    """`LatentFile` -> audio written through an `AudioSink` as the chunks complete."""

    kind = "decode"

    def __init__(self, framing: Framing, lat: LatentFile, sink: AudioSink, name: str) -> None:
        super().__init__(framing, name, lat.meta.duration_seconds, lat.channels, lat.frames)
        meta = lat.meta
        self.lat = lat
        self.sink = sink
        self.model_samples = min(
            self.frames * framing.latent_hop,
            resampled_length(meta.num_samples, meta.source_sample_rate, meta.model_sample_rate),
        )
        self._audio = OverlapAdd(lat.channels, self.model_samples)
        self._received: dict[int, int] = {}  # window index -> channels accepted

    def windows(self) -> Iterator[WindowItem]:
        framing = self.framing
        width = framing.spec.window_frames
        latents = self.lat.latents
        for window in self.plan:
            chunk = torch.zeros(self.channels, self.lat.latent_channels, width)
            lo, hi = max(window.start, 0), min(window.start + width, self.frames)
            chunk[:, :, lo - window.start : hi - window.start] = latents[:, :, lo:hi]
            noise = decoding_noise(framing.config, framing.seed, window.start, width)
            for channel in range(self.channels):
                yield WindowItem(self, window, channel, chunk[channel], noise)

    def accept(self, item: WindowItem, output: np.ndarray) -> None:
        window, hop = item.window, self.framing.latent_hop
        weights = window_weights(window, self.framing.spec, unit=hop)
        values = output[weights.begin : weights.end] * weights.values
        self._audio.add(item.channel, window.start * hop + weights.begin, values)
        self._received[window.index] = self._received.get(window.index, 0) + 1
        if self._received[window.index] == self.channels:  # every channel: write what is final
            until = finished_until(window, self.framing.spec, self.model_samples, hop)
            self.sink.write(self._audio.release(until))

    def _result(self) -> SinkReport:
        self.sink.write(self._audio.release(self.model_samples))
        return self.sink.close()

    def _discard(self) -> None:
        self.sink.abort()
