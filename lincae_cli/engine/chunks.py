"""Chunk planning and crossfade maths: long audio in fixed-size, overlapping pieces.

Time is counted in latent frames. Frame ``k`` is computed from the STFT frames ``[k·2^d,
(k+1)·2^d)`` of the model-rate audio, STFT frame ``i`` covering samples ``[i·hop, i·hop +
n_fft)``, as in the reference packages: a file of ``N`` samples has ``ceil(F / 2^d)`` latent
frames, ``F = (N - n_fft) // hop + 1`` STFT frames (at least one), or ``floor(F / 2^d)`` for a
model that crops as music2latent does (latents/framing.py).
A sequence of ``L`` frames is cut into chunks whose *cores* tile ``[0, L)``, ``chunk_frames``
each (the last core may be shorter). Each chunk is processed as a *window* of
``chunk_frames + 2·margin_frames`` frames: its core plus ``margin_frames`` of context on both
sides, except where the file begins (the first window starts at frame 0) or ends (frames past
the end are padding, which the network ignores exactly: see nn/layers.py).

Neighbouring windows overlap. Their outputs are blended by an equal-gain linear crossfade
``crossfade_frames`` long, centred on the boundary between the two cores; the rest of each
margin is discarded (overlap-save). With ``crossfade_frames = 0`` windows are cut hard at the
core boundaries. A file that fits in one core is computed in one window, exactly as the model
computes it unchunked, whatever the chunk length.

Everything here is pure: numbers and numpy arrays in, numbers and numpy arrays out. The same
maths serves latents (one position per frame, ``unit = 1``) and audio (``unit = H`` positions
per frame). `cut_windows` cuts windows of samples out of a stream of blocks.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_CHUNK_SECONDS = 10.0
# Context on each side of a chunk: about the encoder's and decoder's receptive field in time
# (their 1-D bottleneck blocks alone see +-2 frames each), so that a chunk's core frames are
# computed almost as if the file had not been cut.
DEFAULT_MARGIN_FRAMES = 8
DEFAULT_CROSSFADE_FRAMES = 8
# Shortest window: files this short are rare, and smaller shapes would only add kernels.
SMALLEST_BUCKET = 8


@dataclass(frozen=True)
class ChunkSpec:
    """How a sequence is chunked, in latent frames."""

    chunk_frames: int
    margin_frames: int
    crossfade_frames: int

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {self.chunk_frames}")
        if self.margin_frames < 0:
            raise ValueError(f"margin_frames must be at least 0, got {self.margin_frames}")
        if self.crossfade_frames < 0 or self.crossfade_frames % 2:
            raise ValueError(f"crossfade_frames must be even and >= 0, got {self.crossfade_frames}")
        if self.crossfade_frames > 2 * self.margin_frames:
            raise ValueError("crossfade_frames cannot exceed the overlap (2 * margin_frames)")
        if self.crossfade_frames > self.chunk_frames:
            raise ValueError("crossfade_frames cannot exceed chunk_frames")

    @property
    def window_frames(self) -> int:
        """Frames of every forward pass: core plus both margins."""
        return self.chunk_frames + 2 * self.margin_frames

    def to_metadata(self, latent_rate_hz: float) -> dict[str, float | int | str]:
        """The ``chunking`` entry of a `.lat` file (see docs/cli.md)."""
        return {
            "chunk_frames": self.chunk_frames,
            "chunk_seconds": round(self.chunk_frames / latent_rate_hz, 6),
            "margin_frames": self.margin_frames,
            "crossfade_frames": self.crossfade_frames,
            "window_frames": self.window_frames,
            "overlap_seconds": round(2 * self.margin_frames / latent_rate_hz, 6),
            "padding": "exact",
        }


@dataclass(frozen=True)
class Window:
    """One chunk: its window ``[start, start + window_frames)`` and core ``[core_start,
    core_stop)``, in latent frames; ``start`` is never negative."""

    index: int
    start: int
    core_start: int
    core_stop: int
    is_last: bool
    frames: int  # the window's length: window_frames, or a bucket size for a file in one chunk


def chunk_frames_for_seconds(chunk_seconds: float, sample_rate: int, latent_hop: int) -> int:
    """Whole latent frames closest to ``chunk_seconds`` (at least one)."""
    if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    return max(1, round(chunk_seconds * sample_rate / latent_hop))


def bucket_frames(frames: int, spec: ChunkSpec) -> int:
    """The window length for a file of ``frames`` that fits in one chunk: the smallest power
    of two (at least `SMALLEST_BUCKET`) that holds it, at most ``window_frames``. A few fixed
    sizes keep the shapes the network sees stable while short files cost little."""
    bucket = SMALLEST_BUCKET
    while bucket < frames:
        bucket *= 2
    return min(bucket, spec.window_frames)


def plan_chunks(total_frames: int, spec: ChunkSpec) -> list[Window]:
    """The windows that cover ``total_frames`` latent frames (at least one window)."""
    if total_frames < 1:
        raise ValueError(f"total_frames must be at least 1, got {total_frames}")
    count = -(-total_frames // spec.chunk_frames)
    width = spec.window_frames if count > 1 else bucket_frames(total_frames, spec)
    windows = []
    for index in range(count):
        core_start = index * spec.chunk_frames
        windows.append(
            Window(
                index=index,
                start=max(0, core_start - spec.margin_frames),
                core_start=core_start,
                core_stop=min(core_start + spec.chunk_frames, total_frames),
                is_last=index == count - 1,
                frames=width,
            )
        )
    return windows


@dataclass(frozen=True)
class WindowWeights:
    """Crossfade weights of one window, at ``unit`` positions per latent frame.

    Only ``[begin, end)`` (positions relative to the window start) has non-zero weight;
    ``values`` holds the weights of that stretch.
    """

    begin: int
    end: int
    values: np.ndarray


def window_weights(window: Window, spec: ChunkSpec, unit: int = 1) -> WindowWeights:
    """Equal-gain linear crossfade weights of ``window``.

    Summed over all windows, the weights are exactly 1 at every position of ``[0, L·unit)``:
    where two windows overlap, one ramps down as the other ramps up, each ramp being
    ``(t + 0.5) / crossfade`` at position ``t`` of the crossfade.
    """
    # Relative to its window, the weights depend only on these, so a long file reuses them.
    return _relative_weights(
        spec,
        window.index == 0,
        window.is_last,
        window.core_stop - window.core_start,
        window.core_start - window.start,
        unit,
    )


@functools.lru_cache(maxsize=64)
def _relative_weights(
    spec: ChunkSpec, first: bool, last: bool, core_frames: int, lead_frames: int, unit: int
) -> WindowWeights:
    half = spec.crossfade_frames * unit // 2
    fade = spec.crossfade_frames * unit
    # Positions relative to the core's start, which lies `lead_frames` into the window.
    begin = 0 if first else -half
    end = core_frames * unit + (0 if last else half)
    weights = np.ones(end - begin, dtype=np.float32)
    rising = (np.arange(fade) + 0.5) / fade
    if not first and fade:
        # Starts at `begin`; a short last core can end before the ramp does.
        weights[:fade] = rising[: end - begin]
    if not last and fade:
        ramp_start = core_frames * unit - half - begin
        weights[ramp_start:] = 1.0 - rising
    weights.flags.writeable = False
    origin = -lead_frames * unit
    return WindowWeights(begin - origin, end - origin, weights)


def finished_until(window: Window, spec: ChunkSpec, total: int, unit: int = 1) -> int:
    """Positions before this are final once windows ``0..window.index`` have been added."""
    if window.is_last:
        return total
    return min(total, window.core_stop * unit - spec.crossfade_frames * unit // 2)


class OverlapAdd:
    """Accumulates weighted windows along the last axis and hands out finished stretches.

    The buffer is ``[rows, *row_shape, positions]``; ``add`` sums values into it at absolute
    positions (clipped to ``[0, total)``), ``release`` returns and forgets everything before a
    position. Only the stretch between the last release and the furthest addition is held.
    """

    def __init__(self, rows: int, total: int, row_shape: tuple[int, ...] = (), reserve: int = 0):
        self.total = total
        self._offset = 0
        self._buffer = np.zeros((rows, *row_shape, min(reserve, total)), dtype=np.float32)

    @property
    def released(self) -> int:
        """Positions handed out so far."""
        return self._offset

    def _ensure(self, end: int) -> None:
        needed = end - self._offset
        have = self._buffer.shape[-1]
        if needed > have:
            grown = max(needed, min(2 * have, self.total - self._offset))
            pad = [(0, 0)] * (self._buffer.ndim - 1) + [(0, grown - have)]
            self._buffer = np.pad(self._buffer, pad)

    def add(self, row: int, position: int, values: np.ndarray) -> None:
        """Add ``values`` (``[*row_shape, n]``) to ``row`` from absolute ``position`` on."""
        begin = max(position, 0)
        end = min(position + values.shape[-1], self.total)
        if end <= begin:
            return
        if begin < self._offset:
            raise ValueError(f"position {begin} was already released (up to {self._offset})")
        self._ensure(end)
        target = self._buffer[row, ..., begin - self._offset : end - self._offset]
        target += values[..., begin - position : end - position]

    def release(self, until: int) -> np.ndarray:
        """Everything in ``[released, until)`` as ``[rows, *row_shape, n]``, then forget it."""
        until = min(until, self.total)
        count = max(0, until - self._offset)
        self._ensure(self._offset + count)
        out = self._buffer[..., :count].copy()
        self._buffer = self._buffer[..., count:]
        self._offset += count
        return out


def cut_windows(
    blocks: Iterable[np.ndarray], spans: Sequence[tuple[int, int]], channels: int
) -> Iterator[np.ndarray]:
    """The samples of a stream under each span, as float32 ``[channels, end - begin]``.

    ``blocks`` are consecutive ``[channels, n]`` pieces of one stream; ``spans`` are
    ``(begin, end)`` stream positions, in increasing order of ``begin``, that may start before
    0 or end after the stream: positions outside the stream are zeros. A window is yielded as
    soon as the stream covers it, and only the samples from the next window's begin on are
    held. The last window comes after the stream has been read to its end, so whatever
    watches the stream (a loudness meter) has seen all of it once every window is out.
    """
    buffer = np.zeros((channels, 0), np.float32)
    buffer_start = 0  # stream position of buffer[:, 0]; the buffer ends where reading is
    pending = deque(spans)

    def forget_unneeded() -> None:
        nonlocal buffer, buffer_start
        needed_from = pending[0][0] if pending else buffer_start + buffer.shape[1]
        drop = min(max(needed_from - buffer_start, 0), buffer.shape[1])
        buffer = buffer[:, drop:]
        buffer_start += drop

    def cut(begin: int, end: int) -> np.ndarray:
        window = np.zeros((channels, end - begin), np.float32)
        lo, hi = max(begin, buffer_start), min(end, buffer_start + buffer.shape[1])
        if hi > lo:
            window[:, lo - begin : hi - begin] = buffer[:, lo - buffer_start : hi - buffer_start]
        forget_unneeded()
        return window

    for block in blocks:
        buffer = np.concatenate([buffer, block], axis=1)
        forget_unneeded()
        while len(pending) > 1 and pending[0][1] <= buffer_start + buffer.shape[1]:
            yield cut(*pending.popleft())
    while pending:
        yield cut(*pending.popleft())
