"""Running the model over many files: device, precision, threads, batching, progress.

An `Engine` holds one model ready for inference. Work comes as jobs (`EncodeJob`: audio in,
`LatentFile` out; `DecodeJob`: `LatentFile` in, audio file out). `Engine.run` cuts every job
into fixed-size windows (engine/chunks.py), packs windows from consecutive jobs into batches
of ``batch_size`` for one forward pass each, and blends the outputs back per job. A background
thread reads, resamples and cuts the next windows while the model runs, so at most a couple of
batches of audio are held at a time, whatever the length of the files.

Every window is computed the same way whatever batch it lands in (same shape, per-example
normalisation; decoding noise derived from the seed and the absolute latent frame), so a file
gives the same result alone or among others.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import queue
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from lincae_cli.audio.io import resampled_length
from lincae_cli.engine.chunks import (
    ChunkSpec,
    OverlapAdd,
    Window,
    WindowWeights,
    chunk_frames_for_seconds,
    finished_until,
    latent_frames_for_samples,
    plan_chunks,
    window_weights,
)
from lincae_cli.engine.shard import ShardInfo, shard_info
from lincae_cli.engine.streams import AudioSink, AudioSource, OutputOptions, SinkReport
from lincae_cli.errors import LincaeError
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry
from lincae_cli.nn.autoencoder import PRECISION_DTYPES, ConsistencyAutoencoder

DEFAULT_CHUNK_SECONDS = 10.0
# Context on each side of a chunk: about the encoder's and decoder's receptive field in time
# (their 1-D bottleneck blocks alone see +-2 frames each), so that a chunk's core frames are
# computed almost as if the file had not been cut.
DEFAULT_MARGIN_FRAMES = 8
DEFAULT_CROSSFADE_FRAMES = 8
# On a CPU a 10 s window already fills every core: larger batches only cost memory.
DEFAULT_CPU_BATCH_SIZE = 1
DEFAULT_GPU_BATCH_SIZE = 8
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
_QUEUE_BATCHES = 2


@dataclass(frozen=True)
class EngineOptions:
    """Settings of an `Engine` (the CLI's common options)."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None  # None: `default_batch_size` for the device
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    margin_frames: int = DEFAULT_MARGIN_FRAMES
    crossfade_frames: int = DEFAULT_CROSSFADE_FRAMES
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise LincaeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.chunk_seconds > 0 and np.isfinite(self.chunk_seconds)):
            raise LincaeError(f"--chunk-seconds must be positive, got {self.chunk_seconds}")
        if self.precision not in PRECISIONS:
            raise LincaeError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if self.device not in DEVICES and not self.device.startswith(("cuda:", "mps:")):
            raise LincaeError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")


def choose_device(name: str, shard: ShardInfo | None = None) -> torch.device:
    """``auto``: this rank's CUDA GPU if there is one, else MPS, else the CPU."""
    shard = shard or ShardInfo()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name.startswith("cuda"):
        if not cuda:
            raise LincaeError("--device cuda: no CUDA GPU is available to this torch")
        if name == "cuda":
            return torch.device("cuda", shard.local_rank % torch.cuda.device_count())
    if name.startswith("mps") and not mps:
        raise LincaeError("--device mps: Apple MPS is not available to this torch")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LincaeError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_CPU_BATCH_SIZE if device.type == "cpu" else DEFAULT_GPU_BATCH_SIZE


def configure_threads(threads: int | None, shard: ShardInfo | None = None) -> int:
    """Use every core this process may run on, shared evenly among torchrun's local ranks.

    An explicit ``threads`` or ``OMP_NUM_THREADS`` wins. Returns the thread count in use.
    """
    shard = shard or ShardInfo()
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        threads = max(1, cores // shard.local_world_size)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_inference_model(
    spec: str | None, device: str = "auto", precision: str = "auto", shard: ShardInfo | None = None
) -> ConsistencyAutoencoder:
    """Resolve a ``--model`` spec (None: the default model), load it onto ``device`` and
    prepare it for inference at ``precision``."""
    from lincae_cli.hub.download import resolve_model_file
    from lincae_cli.hub.registry import DEFAULT_MODEL
    from lincae_cli.hub.store import load_model

    path = resolve_model_file(spec or DEFAULT_MODEL)
    model = load_model(path, device=choose_device(device, shard))
    return prepare_model(model, precision)


def prepare_model(model: ConsistencyAutoencoder, precision: str) -> ConsistencyAutoencoder:
    if precision not in PRECISIONS:
        raise LincaeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return model.optimize_for_inference(precision)


def model_identity(model: ConsistencyAutoencoder) -> tuple[str, str]:
    """(name, weights sha256) of a model; models built in memory get a hash of their weights."""
    name = getattr(model, "name", None) or "unsaved-model"
    digest = getattr(model, "weights_sha256", None)
    if digest is None:
        hasher = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            hasher.update(key.encode())
            hasher.update(value.detach().float().cpu().numpy().tobytes())
        digest = hasher.hexdigest()
    return str(name), str(digest)


def _precision_name(model: ConsistencyAutoencoder) -> str:
    return next(name for name, dtype in PRECISION_DTYPES.items() if dtype == model.precision)


# -- jobs -----------------------------------------------------------------------------------


@dataclass
class _Item:
    """One window of one channel of one job, ready for the model."""

    job: Job
    window: Window
    channel: int
    data: torch.Tensor  # encode: audio [samples]; decode: latents [latent_channels, frames]
    noise: torch.Tensor | None = None  # decode: [2, freq_bins, frames · frames_per_latent]


class Job(Protocol):
    name: str
    kind: str
    duration_seconds: float
    channels: int
    frames: int
    plan: list[Window]
    total_items: int

    def windows(self) -> Iterator[_Item]: ...

    def accept(self, item: _Item, output: np.ndarray) -> None: ...

    def finish(self) -> Any: ...

    def abort(self) -> None: ...


class EncodeJob:
    """Audio source -> `LatentFile` (per-channel latents at the model's latent rate)."""

    kind = "encode"

    def __init__(self, engine: Engine, source: AudioSource, input_name: str | None = None) -> None:
        self.engine = engine
        self.source = source
        self.name = source.name
        self.input_name = input_name or source.name
        self.duration_seconds = source.duration_seconds
        config = engine.config
        self.model_samples = resampled_length(
            source.num_samples, source.sample_rate, config.sample_rate
        )
        self.frames = latent_frames_for_samples(self.model_samples, engine.latent_hop)
        self.plan = plan_chunks(self.frames, engine.spec)
        self.channels = source.channels
        self.total_items = len(self.plan) * source.channels
        self._latents = OverlapAdd(
            source.channels, self.frames, (config.latent_channels,), reserve=self.frames
        )

    def windows(self) -> Iterator[_Item]:
        engine = self.engine
        hop, pad = engine.latent_hop, engine.alignment_offset
        blocks = self.source.model_rate_blocks(engine.config.sample_rate)
        buffer = np.zeros((self.source.channels, 0), np.float32)
        buffer_start = 0  # model-rate sample index of buffer[:, 0]
        for window in self.plan:
            begin = window.start * hop - pad
            end = (window.start + engine.spec.window_frames) * hop + pad
            while buffer_start + buffer.shape[1] < min(end, self.model_samples):
                buffer = np.concatenate([buffer, next(blocks)], axis=1)
            audio = np.zeros((self.source.channels, end - begin), np.float32)
            lo, hi = max(begin, buffer_start), min(end, buffer_start + buffer.shape[1])
            if hi > lo:
                audio[:, lo - begin : hi - begin] = buffer[:, lo - buffer_start : hi - buffer_start]
            next_begin = (window.start + engine.spec.chunk_frames) * hop - pad
            if next_begin > buffer_start:
                buffer = buffer[:, next_begin - buffer_start :]
                buffer_start = max(buffer_start, next_begin)
            data = torch.from_numpy(audio)
            for channel in range(self.source.channels):
                yield _Item(self, window, channel, data[channel])
        for _ in blocks:  # the loudness meter sees the whole file
            pass

    def accept(self, item: _Item, output: np.ndarray) -> None:
        weights = self.engine.weights(item.window, unit=1)
        values = output[:, weights.begin : weights.end] * weights.values
        self._latents.add(item.channel, item.window.start + weights.begin, values)

    def finish(self) -> LatentFile:
        engine = self.engine
        config = engine.config
        latents = torch.from_numpy(self._latents.release(self.frames))
        meta = LatentMeta(
            model_name=engine.model_name,
            model_sha256=engine.model_sha256,
            scale_factor=config.scale_factor,
            model_sample_rate=config.sample_rate,
            source_sample_rate=self.source.sample_rate,
            num_samples=self.source.num_samples,
            channels=self.source.channels,
            latent_rate_hz=config.latent_rate_hz,
            latent_hop_samples=engine.latent_hop,
            chunking=engine.spec.to_metadata(config.latent_rate_hz),
            source_loudness_lufs=self.source.loudness_lufs,
            loudness_is_estimate=False,
            provenance=[
                provenance_entry(
                    "encode",
                    input=self.input_name,
                    precision=_precision_name(engine.model),
                    device=engine.device.type,
                )
            ],
        )
        return LatentFile(latents=latents, meta=meta)

    def abort(self) -> None:
        pass


class DecodeJob:
    """`LatentFile` -> audio written through an `AudioSink` as the chunks complete."""

    kind = "decode"

    def __init__(self, engine: Engine, lat: LatentFile, sink: AudioSink, name: str) -> None:
        engine.check_decodable(lat, name)
        self.engine = engine
        self.lat = lat
        self.sink = sink
        self.name = name
        self.duration_seconds = lat.meta.duration_seconds
        meta = lat.meta
        self.frames = lat.frames
        self.model_samples = min(
            self.frames * engine.latent_hop,
            resampled_length(meta.num_samples, meta.source_sample_rate, meta.model_sample_rate),
        )
        self.plan = plan_chunks(self.frames, engine.spec)
        self.channels = lat.channels
        self.total_items = len(self.plan) * lat.channels
        self._audio = OverlapAdd(lat.channels, self.model_samples)
        self._received: dict[int, int] = {}

    def windows(self) -> Iterator[_Item]:
        engine = self.engine
        width = engine.spec.window_frames
        latents = self.lat.latents
        for window in self.plan:
            chunk = torch.zeros(self.lat.channels, self.lat.latent_channels, width)
            lo, hi = max(window.start, 0), min(window.start + width, self.frames)
            chunk[:, :, lo - window.start : hi - window.start] = latents[:, :, lo:hi]
            noise = engine.noise(window.start, width)
            for channel in range(self.lat.channels):
                yield _Item(self, window, channel, chunk[channel], noise)

    def accept(self, item: _Item, output: np.ndarray) -> None:
        engine, window = self.engine, item.window
        hop = engine.latent_hop
        weights = engine.weights(window, unit=hop)
        values = output[weights.begin : weights.end] * weights.values
        self._audio.add(item.channel, window.start * hop + weights.begin, values)
        self._received[window.index] = self._received.get(window.index, 0) + 1
        if self._received[window.index] == self.lat.channels:
            until = finished_until(window, engine.spec, self.model_samples, hop)
            self.sink.write(self._audio.release(until))

    def finish(self) -> SinkReport:
        self.sink.write(self._audio.release(self.model_samples))
        return self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


# -- progress -------------------------------------------------------------------------------


class ProgressListener(Protocol):
    """What `Engine.run` reports as it goes (see engine/progress.py for the rich bars)."""

    def start(self, total_seconds: float, total_jobs: int, total_batches: int) -> None: ...

    def advance(self, seconds: float) -> None: ...

    def batch_done(self) -> None: ...

    def job_done(self, name: str, ok: bool) -> None: ...

    def stop(self) -> None: ...


@dataclass
class JobOutcome:
    """A finished job: ``result`` (LatentFile or SinkReport) or ``error``."""

    job: Any
    result: Any = None
    error: LincaeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Batch:
    items: list[_Item]
    ended: list[Any]
    failed: list[tuple[Any, LincaeError]]


@dataclass
class _Crash:
    error: BaseException


_DONE = object()


# -- the engine -----------------------------------------------------------------------------


class Engine:
    """One model ready for inference, and the batching loop around it."""

    def __init__(self, model: ConsistencyAutoencoder, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.model = model
        self.config = model.config
        self.device = model.device
        self.model_name, self.model_sha256 = model_identity(model)
        config = self.config
        if (config.n_fft - config.hop) % 2:
            raise LincaeError("model n_fft - hop must be even for the engine's time alignment")
        self.latent_hop = config.latent_hop_samples
        # Left padding that centres STFT frame j on sample j*hop + hop/2, so that latent frame
        # k covers samples [k*H, (k+1)*H).
        self.alignment_offset = (config.n_fft - config.hop) // 2
        chunk_frames = chunk_frames_for_seconds(
            self.options.chunk_seconds, config.sample_rate, self.latent_hop
        )
        self.batch_size = self.options.batch_size or default_batch_size(self.device)
        crossfade = min(self.options.crossfade_frames, chunk_frames - chunk_frames % 2)
        self.spec = ChunkSpec(chunk_frames, self.options.margin_frames, crossfade)

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

    # -- building jobs ----------------------------------------------------------------------

    def encode_job(self, source: AudioSource, input_name: str | None = None) -> EncodeJob:
        return EncodeJob(self, source, input_name)

    def decode_job(
        self,
        lat: LatentFile,
        target: str | os.PathLike[str] | None,
        options: OutputOptions | None = None,
        name: str = "<latents>",
    ) -> DecodeJob:
        """A job decoding ``lat`` to ``target`` (path, ``"-"``, or None to keep in memory)."""
        options = options or OutputOptions()
        meta = lat.meta
        rate = options.sample_rate or meta.source_sample_rate
        length = (
            meta.num_samples
            if rate == meta.source_sample_rate
            else resampled_length(meta.num_samples, meta.source_sample_rate, rate)
        )
        sink = AudioSink(target, lat.channels, meta.model_sample_rate, rate, length, options)
        return DecodeJob(self, lat, sink, name)

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
            meta.latent_hop_samples != self.latent_hop
            or meta.model_sample_rate != config.sample_rate
            or lat.latent_channels != config.latent_channels
        ):
            raise LincaeError(f"{name}: latent layout does not match model '{self.model_name}'")

    # -- maths shared by the jobs -----------------------------------------------------------

    @functools.lru_cache(maxsize=64)  # noqa: B019 (engines live as long as the process)
    def _weights(self, first: bool, last: bool, core: int, unit: int) -> WindowWeights:
        window = Window(
            index=0 if first else 1,
            start=-self.spec.margin_frames,
            core_start=0,
            core_stop=core,
            is_last=last,
        )
        return window_weights(window, self.spec, unit)

    def weights(self, window: Window, unit: int) -> WindowWeights:
        """Crossfade weights of ``window`` at ``unit`` positions per latent frame."""
        core = window.core_stop - window.core_start
        return self._weights(window.index == 0, window.is_last, core, unit)

    def noise(self, start_frame: int, frames: int) -> torch.Tensor:
        """Initial decoding noise ``[2, freq_bins, frames·frames_per_latent]`` (unit variance).

        Each latent frame's noise comes from its own generator seeded by (seed, absolute
        frame index), so it does not depend on chunking, batching or which file it is in.
        """
        config = self.config
        per_frame = (2, config.freq_bins, config.frames_per_latent)
        pieces = []
        generator = torch.Generator()
        for frame in range(start_frame, start_frame + frames):
            generator.manual_seed(_frame_seed(self.options.seed, frame))
            pieces.append(torch.randn(per_frame, generator=generator))
        return torch.cat(pieces, dim=-1)

    # -- forward passes ---------------------------------------------------------------------

    def _forward(self, kind: str, items: Sequence[_Item]) -> np.ndarray:
        """Model outputs for ``items``: encode ``[n, latent_channels, window_frames]``, decode
        ``[n, window_frames·H]`` (model-rate audio aligned with the window)."""
        # Every pass has exactly `batch_size` examples: kernels chosen for another batch size
        # can round differently, and results must not depend on what else is in the batch.
        padding = self.batch_size - len(items)
        data = _stack_padded([item.data for item in items], padding).to(self.device)
        with torch.inference_mode():
            if kind == "encode":
                return self.model.encode(data)[: len(items)].float().cpu().numpy()
            noise = _stack_padded([item.noise for item in items], padding)  # type: ignore[misc]
            audio = self.model.decode(
                data, steps=1, initial_noise=noise.to(self.device) * self.config.sigma_max
            )
            begin = self.alignment_offset
            width = self.spec.window_frames * self.latent_hop
            return audio[: len(items), begin : begin + width].float().cpu().numpy()

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self, jobs: Iterable[Job], progress: ProgressListener | None = None
    ) -> Iterator[JobOutcome]:
        """Run ``jobs`` (all encode or all decode) and yield each one's outcome as it ends.

        A job that fails (unreadable audio, unwritable output) yields an outcome with its
        `LincaeError`; the others go on. Stopping early (an exception, Ctrl-C, closing the
        generator) aborts the unfinished jobs, so no partial output is left behind.
        """
        jobs = list(jobs)
        if not jobs:
            return
        kinds = {job.kind for job in jobs}
        if len(kinds) != 1:
            raise ValueError(f"one kind of job per run, got {sorted(kinds)}")
        kind = kinds.pop()
        batch_size = self.batch_size
        if progress is not None:
            total_items = sum(job.total_items for job in jobs)
            progress.start(
                sum(job.duration_seconds for job in jobs),
                len(jobs),
                -(-total_items // batch_size),
            )
        messages: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        stop = threading.Event()
        cancelled: set[int] = set()
        producer = threading.Thread(
            target=_produce,
            args=(jobs, batch_size, messages, stop, cancelled),
            name="lincae-reader",
            daemon=True,
        )
        open_jobs = {id(job): job for job in jobs}
        producer.start()
        try:
            while True:
                message = messages.get()
                if message is _DONE:
                    break
                if isinstance(message, _Crash):
                    raise message.error
                yield from self._handle(kind, message, open_jobs, cancelled, progress)
        finally:
            stop.set()
            for job in open_jobs.values():
                job.abort()
            while producer.is_alive():
                try:
                    messages.get(timeout=0.05)
                except queue.Empty:
                    pass
            if progress is not None:
                progress.stop()

    def _handle(
        self,
        kind: str,
        batch: _Batch,
        open_jobs: dict[int, Any],
        cancelled: set[int],
        progress: ProgressListener | None,
    ) -> Iterator[JobOutcome]:
        items = [item for item in batch.items if id(item.job) in open_jobs]
        if items:
            outputs = self._forward(kind, items)
            for item, output in zip(items, outputs, strict=True):
                job = item.job
                if id(job) not in open_jobs:
                    continue
                try:
                    job.accept(item, output)
                except LincaeError as error:
                    batch.failed.append((job, error))
                    cancelled.add(id(job))
                    open_jobs.pop(id(job))
                    job.abort()
                if progress is not None:
                    window = item.window
                    share = (window.core_stop - window.core_start) / job.frames
                    progress.advance(job.duration_seconds * share / job.channels)
            if progress is not None:
                progress.batch_done()
        for job in batch.ended:
            if id(job) not in open_jobs:
                continue
            open_jobs.pop(id(job))
            try:
                result = job.finish()
            except LincaeError as error:
                job.abort()
                batch.failed.append((job, error))
                continue
            if progress is not None:
                progress.job_done(job.name, True)
            yield JobOutcome(job, result=result)
        for job, error in batch.failed:
            if open_jobs.pop(id(job), None) is not None:
                job.abort()
            if progress is not None:
                progress.job_done(job.name, False)
            yield JobOutcome(job, error=error)


def _stack_padded(tensors: Sequence[torch.Tensor], padding: int) -> torch.Tensor:
    stacked = torch.stack(list(tensors))
    if padding <= 0:
        return stacked
    return torch.cat([stacked, stacked.new_zeros((padding, *stacked.shape[1:]))])


def _frame_seed(seed: int, frame: int) -> int:
    digest = hashlib.blake2b(struct.pack("<qq", seed, frame), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _produce(
    jobs: list[Any],
    batch_size: int,
    messages: queue.Queue[Any],
    stop: threading.Event,
    cancelled: set[int],
) -> None:
    """Reader thread: cut jobs into windows and queue them as batches (see `Engine.run`)."""

    def put(message: Any) -> bool:
        while not stop.is_set():
            try:
                messages.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        batch = _Batch([], [], [])
        for job in jobs:
            try:
                for item in job.windows():
                    if stop.is_set():
                        return
                    if id(job) in cancelled:
                        break
                    batch.items.append(item)
                    if len(batch.items) == batch_size:
                        if not put(batch):
                            return
                        batch = _Batch([], [], [])
            except LincaeError as error:
                batch.items = [item for item in batch.items if item.job is not job]
                batch.failed.append((job, error))
                continue
            batch.ended.append(job)
        if batch.items or batch.ended or batch.failed:
            if not put(batch):
                return
        put(_DONE)
    except BaseException as error:  # a bug: hand it to the main thread to raise
        put(_Crash(error))


# -- one-shot helpers for the library API ---------------------------------------------------


def encode_array(engine: Engine, audio: np.ndarray, sample_rate: int, name: str) -> LatentFile:
    """Encode in-memory audio ``[channels, samples]`` (or ``[samples]``)."""
    from lincae_cli.engine.streams import ArraySource

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


def with_options(engine: Engine, **changes: Any) -> Engine:
    """The same model with other options (no reload)."""
    return Engine(engine.model, dataclasses.replace(engine.options, **changes))


__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "Engine",
    "EngineOptions",
    "JobOutcome",
    "choose_device",
    "configure_threads",
    "decode_to_array",
    "encode_array",
    "load_inference_model",
]
