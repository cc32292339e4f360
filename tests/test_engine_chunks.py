"""Chunk planning and crossfade maths (engine/chunks.py), alone: no model, no files."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lincae_cli.engine.chunks import (
    ChunkSpec,
    OverlapAdd,
    chunk_frames_for_seconds,
    cut_windows,
    finished_until,
    plan_chunks,
    window_weights,
)
from lincae_cli.latents.framing import latent_frames_for_samples


def test_frames_for_samples_follow_the_reference_framing() -> None:
    # hop 512, n_fft 2048, 8 STFT frames per latent frame (every preset).
    def frames(samples: int) -> int:
        return latent_frames_for_samples(samples, 512, 2048, 8)

    assert frames(1) == frames(2048) == 1  # shorter than one STFT frame: padded to one
    assert frames(2048 + 7 * 512) == 1 and frames(2048 + 8 * 512) == 2  # 8, then 9 STFT frames
    assert frames(352800) == 86  # 8 s at 44.1 kHz: 686 STFT frames, as linear-cae gives
    assert frames(441000) == 108


def test_chunk_seconds_round_to_whole_frames() -> None:
    assert chunk_frames_for_seconds(10.0, 44100, 4096) == 108
    assert chunk_frames_for_seconds(0.01, 44100, 4096) == 1
    with pytest.raises(ValueError):
        chunk_frames_for_seconds(0.0, 44100, 4096)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="even"):
        ChunkSpec(10, 4, 3)
    with pytest.raises(ValueError, match="overlap"):
        ChunkSpec(10, 1, 4)
    with pytest.raises(ValueError, match="chunk_frames"):
        ChunkSpec(2, 8, 4)
    assert ChunkSpec(10, 4, 8).window_frames == 18


def test_plan_tiles_the_sequence_with_fixed_size_windows() -> None:
    spec = ChunkSpec(chunk_frames=5, margin_frames=3, crossfade_frames=2)
    plan = plan_chunks(12, spec)
    assert [(w.start, w.core_start, w.core_stop) for w in plan] == [
        (0, 0, 5),  # the file's start: no context before it
        (2, 5, 10),
        (7, 10, 12),
    ]
    assert [w.is_last for w in plan] == [False, False, True]
    assert len(plan_chunks(1, spec)) == 1
    with pytest.raises(ValueError):
        plan_chunks(0, spec)


def _weight_sum(total: int, spec: ChunkSpec, unit: int) -> np.ndarray:
    summed = np.zeros((total + 2 * spec.window_frames) * unit)
    shift = spec.window_frames * unit  # room for negative window starts
    for window in plan_chunks(total, spec):
        weights = window_weights(window, spec, unit)
        assert weights.begin >= 0 and weights.end <= spec.window_frames * unit
        start = window.start * unit + shift
        summed[start + weights.begin : start + weights.end] += weights.values
    return summed[shift : shift + total * unit]


@given(
    total=st.integers(1, 60),
    chunk=st.integers(1, 12),
    margin=st.integers(0, 6),
    half_fade=st.integers(0, 6),
    unit=st.sampled_from([1, 3, 8]),
)
def test_crossfade_weights_sum_to_one_everywhere(
    total: int, chunk: int, margin: int, half_fade: int, unit: int
) -> None:
    fade = min(2 * half_fade, 2 * margin, chunk - chunk % 2)
    spec = ChunkSpec(chunk, margin, fade)
    np.testing.assert_allclose(_weight_sum(total, spec, unit), 1.0, atol=1e-6)


def test_crossfade_is_linear_and_centred_on_the_boundary() -> None:
    spec = ChunkSpec(chunk_frames=8, margin_frames=4, crossfade_frames=4)
    first, second, _ = plan_chunks(24, spec)
    falling = window_weights(first, spec)
    rising = window_weights(second, spec)
    # First window: weight 1 from frame 0 to 6, then down over frames 6..9 (boundary at 8).
    assert falling.begin == 0 and falling.end == 10
    np.testing.assert_allclose(falling.values[-4:], [0.875, 0.625, 0.375, 0.125])
    np.testing.assert_allclose(rising.values[:4], [0.125, 0.375, 0.625, 0.875])
    assert second.start + rising.begin == 6


def test_hard_cut_without_crossfade() -> None:
    spec = ChunkSpec(chunk_frames=4, margin_frames=2, crossfade_frames=0)
    for window in plan_chunks(10, spec):
        weights = window_weights(window, spec, unit=2)
        assert weights.values.tolist() == [1.0] * (weights.end - weights.begin)
        assert window.start * 2 + weights.begin == window.core_start * 2


def test_finished_until_precedes_the_next_window_weights() -> None:
    spec = ChunkSpec(chunk_frames=6, margin_frames=3, crossfade_frames=4)
    plan = plan_chunks(20, spec)
    for current, following in zip(plan, plan[1:], strict=False):
        weights = window_weights(following, spec, unit=5)
        assert finished_until(current, spec, 100, unit=5) == following.start * 5 + weights.begin
    assert finished_until(plan[-1], spec, 97, unit=5) == 97


def test_overlap_add_releases_finished_stretches() -> None:
    buffer = OverlapAdd(rows=2, total=10, row_shape=(3,))
    buffer.add(0, -2, np.ones((3, 6), np.float32))  # clipped at 0
    buffer.add(1, 2, np.full((3, 4), 2.0, np.float32))
    first = buffer.release(3)
    assert first.shape == (2, 3, 3)
    assert first[0, 0].tolist() == [1, 1, 1] and first[1, 0].tolist() == [0, 0, 2]
    buffer.add(0, 3, np.ones((3, 20), np.float32))  # clipped at total
    rest = buffer.release(100)
    assert rest.shape == (2, 3, 7) and buffer.released == 10
    assert rest[0, 0].tolist() == [2, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="released"):
        buffer.add(0, 5, np.ones((3, 2), np.float32))


# -- cutting windows out of a stream of blocks ----------------------------------------------


def _reference_window(stream: np.ndarray, begin: int, end: int) -> np.ndarray:
    """The stream under [begin, end), zeros outside it: what `cut_windows` must give."""
    window = np.zeros((stream.shape[0], end - begin), np.float32)
    lo, hi = max(begin, 0), min(end, stream.shape[1])
    if hi > lo:
        window[:, lo - begin : hi - begin] = stream[:, lo:hi]
    return window


@given(
    length=st.integers(1, 300),
    block=st.integers(1, 64),
    chunk=st.integers(1, 40),
    margin=st.integers(0, 20),
    stride=st.integers(1, 90),
    channels=st.integers(1, 3),
)
def test_cut_windows_gives_the_stream_under_each_span(
    length: int, block: int, chunk: int, margin: int, stride: int, channels: int
) -> None:
    # Spans overlap (as the engine's do) or leave gaps, depending on the stride.
    stream = np.arange(channels * length, dtype=np.float32).reshape(channels, length) + 1
    blocks = [stream[:, start : start + block] for start in range(0, length, block)]
    starts = range(-margin, length, stride)
    spans = [(start, start + chunk + 2 * margin) for start in starts]
    windows = list(cut_windows(iter(blocks), spans, channels))
    assert len(windows) == len(spans)
    for (begin, end), window in zip(spans, windows, strict=True):
        np.testing.assert_array_equal(window, _reference_window(stream, begin, end))


def test_cut_windows_reads_lazily_and_ends_the_stream_before_the_last_window() -> None:
    read: list[int] = []
    ended = []

    def blocks() -> Iterator[np.ndarray]:
        for index in range(10):
            read.append(index)
            yield np.full((1, 10), index, np.float32)
        ended.append(True)  # e.g. a loudness meter's result is ready now

    windows = cut_windows(blocks(), [(0, 15), (10, 25), (90, 120)], 1)
    first = next(windows)
    assert read == [0, 1] and first[0, -1] == 1  # only what the first window needs
    next(windows)
    assert not ended
    last = next(windows)
    assert ended and last[0, :10].tolist() == [9.0] * 10 and not last[0, 10:].any()
    assert next(windows, None) is None


def test_cut_windows_holds_only_from_the_next_window_on() -> None:
    blocks = (np.ones((2, 1000), np.float32) for _ in range(100))
    spans = [(start, start + 1200) for start in range(0, 100_000, 1000)]
    held = 0
    for window in cut_windows(blocks, spans, 2):
        held = max(held, window.nbytes)
    assert held == 2 * 1200 * 4  # sanity: the windows themselves
