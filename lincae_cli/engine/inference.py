"""`Engine`: one model ready for inference over many files, and the library's one-shot calls.

An engine builds jobs (`EncodeJob`: audio in, `LatentFile` out; `DecodeJob`: `LatentFile` in,
audio out) and runs them through the batching loop (engine/runner.py), one forward pass per
batch of ``batch_size`` windows.

Every window is computed the same way whatever batch it lands in (same shape, per-example
normalisation; decoding noise derived from the seed and the absolute latent frame), so a file
gives the same result alone or among others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from lincae_cli.audio.rates import resampled_length
from lincae_cli.audio.sink import AudioSink, OutputOptions, SinkReport
from lincae_cli.audio.sources import ArraySource, AudioSource
from lincae_cli.engine.allocator import keep_freed_memory_if
from lincae_cli.engine.chunks import ChunkSpec, chunk_frames_for_seconds
from lincae_cli.engine.device import (
    choose_device,
    configure_threads,
    default_batch_size,
    model_bytes,
    plan_memory,
    reader_threads,
    resolve_precision,
    running_on,
    window_bytes,
)
from lincae_cli.engine.jobs import DecodeJob, EncodeJob, Framing, Job, WindowItem
from lincae_cli.engine.options import EngineOptions, check_precision
from lincae_cli.engine.runner import JobOutcome, ProgressListener, run_jobs
from lincae_cli.engine.shard import ShardInfo, shard_info
from lincae_cli.errors import LincaeError
from lincae_cli.latents.latfile import LatentFile
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder


def load_inference_model(
    spec: str | None, device: str = "auto", precision: str = "auto", shard: ShardInfo | None = None
) -> ConsistencyAutoencoder:
    """Resolve a ``--model`` spec (None: the default model), load it onto ``device`` and
    prepare it for inference at ``precision``."""
    from lincae_cli.hub.download import resolve_model_file
    from lincae_cli.hub.registry import default_model
    from lincae_cli.hub.store import load_model

    check_precision(precision)
    path = resolve_model_file(spec or default_model()[0])
    model = load_model(path, device=choose_device(device, shard))
    precision = resolve_precision(precision, model.device, inference=True)
    return model.optimize_for_inference(precision)


class Engine:
    """One model ready for inference: builds jobs and runs their windows through the model."""

    def __init__(self, model: ConsistencyAutoencoder, options: EngineOptions | None = None):
        from lincae_cli.hub.silence import silence_latent_of
        from lincae_cli.hub.store import model_identity

        self.options = options or EngineOptions()
        self.model = model
        self.config = config = model.config
        self.device = model.device
        self.model_name, self.model_sha256 = model_identity(model)
        if (config.n_fft - config.hop) % 2:
            raise LincaeError("model n_fft - hop must be even for the engine's time alignment")
        margin = self.options.margin_frames
        plan = plan_memory(
            config,
            self.device,
            model.precision_name,
            model_bytes(model),
            margin,
            self.options.chunk_seconds,
            self.options.batch_size or 1,
        )
        chunk_frames = chunk_frames_for_seconds(
            plan.chunk_seconds, config.sample_rate, config.latent_hop_samples
        )
        window = window_bytes(config, chunk_frames + 2 * margin)
        self.batch_size = self.options.batch_size or default_batch_size(self.device, window)
        self.keeps_freed_memory = keep_freed_memory_if(plan.keep_freed)
        self.readers = reader_threads(self.device)  # 1 on the CPU
        crossfade = min(self.options.crossfade_frames, chunk_frames - chunk_frames % 2)
        self.framing = Framing(
            config=config,
            spec=ChunkSpec(chunk_frames, margin, crossfade),
            seed=self.options.seed,
            model_name=self.model_name,
            model_sha256=self.model_sha256,
            precision=model.precision_name,
            device_type=self.device.type,
            silence_latent=silence_latent_of(model, self.model_sha256),
            affine_default=model.affine_default,
        )

    @classmethod
    def load(
        cls, spec: str | None, options: EngineOptions | None = None, shard: ShardInfo | None = None
    ) -> Engine:
        """Load the model named by ``spec`` (None: the default) with ``options``."""
        options = options or EngineOptions()
        shard = shard or shard_info()
        model = load_inference_model(spec, options.device, options.precision, shard)
        if model.device.type == "cpu":
            configure_threads(options.threads, shard)
        return cls(model, options)

    @property
    def spec(self) -> ChunkSpec:
        return self.framing.spec

    @property
    def restores_loudness(self) -> bool:
        """Whether decoding brings the output to the recorded loudness unless told otherwise:
        the model's measured default (hub/store.py, `restore_loudness`)."""
        return bool(self.model.restore_loudness)

    # -- building jobs ----------------------------------------------------------------------

    def encode_job(self, source: AudioSource, input_name: str | None = None) -> EncodeJob:
        return EncodeJob(self.framing, source, input_name)

    def decode_job(
        self,
        lat: LatentFile,
        target: str | os.PathLike[str] | None,
        options: OutputOptions | None = None,
        name: str = "<latents>",
    ) -> DecodeJob:
        """A job decoding ``lat`` to ``target`` (path, ``"-"``, or None to keep in memory).

        The output is brought to the loudness ``lat`` records when ``options.restore_loudness``
        says so (None: the model's default, `restores_loudness`) and the loudness is known.
        """
        self.check_decodable(lat, name)
        options = options or OutputOptions()
        meta = lat.meta
        restore = options.restore_loudness
        if restore is None:
            restore = self.restores_loudness
        target_lufs = meta.source_loudness_lufs if restore else None
        rate = options.sample_rate or meta.source_sample_rate
        length, skip = (
            (meta.num_samples, meta.offset_samples)
            if rate == meta.source_sample_rate
            else (
                resampled_length(meta.num_samples, meta.source_sample_rate, rate),
                resampled_length(meta.offset_samples, meta.source_sample_rate, rate),
            )
        )
        sink = AudioSink(
            target, lat.channels, meta.model_sample_rate, rate, length, options, skip, target_lufs
        )
        return DecodeJob(self.framing, lat, sink, name)

    def check_decodable(self, lat: LatentFile, name: str) -> None:
        """Raise if ``lat`` was not made by this engine's model."""
        meta, config = lat.meta, self.config
        if meta.model_sha256 != self.model_sha256:
            raise LincaeError(
                f"{name}: encoded with model '{meta.model_name}' (sha256 "
                f"{meta.model_sha256[:12]}), not with '{self.model_name}' (sha256 "
                f"{self.model_sha256[:12]}); pass the encoding model with --model"
            )
        if (
            meta.latent_hop_samples != config.latent_hop_samples
            or meta.model_sample_rate != config.sample_rate
            or lat.latent_channels != config.latent_channels
        ):
            raise LincaeError(f"{name}: latent layout does not match model '{self.model_name}'")

    # -- running ----------------------------------------------------------------------------

    def run(
        self, jobs: Iterable[Job], progress: ProgressListener | None = None
    ) -> Iterator[JobOutcome[Any]]:
        """Run ``jobs`` (all encode or all decode) and yield each one's outcome as it ends (see
        `runner.run_jobs`)."""
        jobs = list(jobs)
        kinds = {job.kind for job in jobs}
        if len(kinds) > 1:
            raise ValueError(f"one kind of job per run, got {sorted(kinds)}")
        if not jobs:
            return
        forward = self._encode_windows if kinds.pop() == "encode" else self._decode_windows
        yield from run_jobs(jobs, forward, self.batch_size, progress, self.readers)

    def _batch(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The tensors stacked, zero-padded at the end of time to the longest, and padded with
        zero examples to `batch_size`: every pass has exactly `batch_size` examples (kernels
        chosen for another batch size round differently), and padding never changes results
        (padding-exact execution). For a GPU the batch is stacked in pinned host memory and
        copied without blocking; on the CPU it stays where it is."""
        width = max(tensor.shape[-1] for tensor in tensors)
        pinned = self.device.type == "cuda"
        shape = (self.batch_size, *tensors[0].shape[:-1], width)
        stacked = torch.zeros(shape, pin_memory=pinned)
        for row, tensor in enumerate(tensors):
            stacked[row, ..., : tensor.shape[-1]] = tensor
        return stacked.to(self.device, non_blocking=pinned)

    def _encode_windows(self, items: Sequence[WindowItem]) -> np.ndarray:
        """Latents ``[n, latent_channels, frames]`` of the items' audio windows (the longest
        window's frames)."""
        with self._running():
            data = self._batch([item.data for item in items])
            per_latent = self.config.frames_per_latent
            full = (data.shape[-1] - self.framing.overhang) // self.config.latent_hop_samples
            latents = self.model.encode(data, self._valid(items, full * per_latent))
            return latents[: len(items)].float().cpu().numpy()

    def _decode_windows(self, items: Sequence[WindowItem]) -> np.ndarray:
        """Model-rate audio ``[n, frames·H + n_fft - hop]`` of the items' windows, from their
        first STFT frame on (the longest window's frames)."""
        with self._running():
            noise = self._batch([item.noise for item in items])  # type: ignore[misc]
            data = self._batch([item.data for item in items])
            audio = self.model.decode(
                data,
                steps=1,
                initial_noise=noise * self.config.sigma_max,
                valid=self._valid(items, data.shape[-1]),
            )
            return audio[: len(items)].float().cpu().numpy()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Inference mode on the engine's device (engine/device.py, `running_on`)."""
        with running_on(self.device, self.framing.precision), torch.inference_mode():
            yield

    def _valid(self, items: Sequence[WindowItem], full: int) -> torch.Tensor | None:
        """Real frames per example of a batch (the filler examples count as full), or None
        when nothing is padding, which runs the network unmasked."""
        valid = [item.valid for item in items] + [full] * (self.batch_size - len(items))
        if all(count == full for count in valid):
            return None
        return torch.tensor(valid, device=self.device)


# -- one-shot helpers for the library API ---------------------------------------------------


def encode_array(engine: Engine, audio: np.ndarray, sample_rate: int, name: str) -> LatentFile:
    """Encode in-memory audio ``[channels, samples]`` (or ``[samples]``)."""
    (outcome,) = engine.run([engine.encode_job(ArraySource(name, audio, sample_rate))])
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


def decode_to_array(
    engine: Engine, lat: LatentFile, options: OutputOptions | None = None
) -> tuple[np.ndarray, int]:
    """Decode ``lat`` in memory: (float32 ``[channels, samples]``, sample rate)."""
    (outcome,) = engine.run([engine.decode_job(lat, None, options, "<latents>")])
    if outcome.error is not None:
        raise outcome.error
    report: SinkReport = outcome.result
    assert report.audio is not None
    return report.audio, report.sample_rate
