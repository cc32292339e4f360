"""Second-order IIR filters (biquads) in NumPy alone: BS.1770's K-weighting without SciPy.

Importing `scipy.signal` (for its ``lfilter``) took 0.7 s of every `lincae encode` and
`decode`. A biquad is a linear recurrence, so it can be run a block of `BLOCK` samples at a
time with matrix products instead of a loop per sample:

    y[n] = b0·x[n] + b1·x[n-1] + b2·x[n-2] − a1·y[n-1] − a2·y[n-2]

Every block's response is its zero-state response (the block's input times the
lower-triangular Toeplitz matrix of the filter's impulse response) plus the free responses to
the two inputs and the two outputs before it. The inputs are known; the carried outputs follow
a 2x2 linear recurrence from block to block, which a prefix scan with doubling steps solves for
all blocks at once. Results equal ``scipy.signal.lfilter`` to float64 rounding
(tests/test_engine_streams.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Samples per block of the recursion: the Toeplitz product costs 2·BLOCK flops a sample, the
# scan log2(samples / BLOCK) small steps.
BLOCK = 32
# Blocks per matrix product. OpenBLAS (NumPy's BLAS) runs products under 2^18 multiply-adds
# on the calling thread and wakes its own thread pool for larger ones, whose threads then spin
# against torch's on the same cores: with the Toeplitz product of a whole 65536-sample read in
# one call, `lincae encode`'s encoder network took 12.3 s instead of 10.0 (5-minute stereo,
# lincae-small, 2 cores; `benchmarks/profile_cli.py`).
ROWS_PER_PRODUCT = 128


@dataclass
class Biquad:
    """One biquad, normalised (a0 = 1), with its responses over a block precomputed."""

    b: tuple[float, float, float]
    a: tuple[float, float]  # a1, a2
    _toeplitz: np.ndarray = field(init=False, repr=False)  # [BLOCK, BLOCK]
    _free: np.ndarray = field(init=False, repr=False)  # [4, BLOCK]: from x[-1], x[-2], y[-1], y[-2]
    _carry: np.ndarray = field(init=False, repr=False)  # [2, 2]: y[-1], y[-2] block to block

    def __post_init__(self) -> None:
        impulse = self._run(np.eye(1, BLOCK)[0], np.zeros(4))
        rows, columns = np.indices((BLOCK, BLOCK))
        self._toeplitz = np.where(rows >= columns, impulse[np.abs(rows - columns)], 0.0)
        self._free = np.stack([self._run(np.zeros(BLOCK), unit) for unit in np.eye(4)])
        # (y[end-1], y[end-2]) of a block from its (y[-1], y[-2]), its input aside.
        self._carry = self._free[2:, [BLOCK - 1, BLOCK - 2]].T

    def _run(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The recurrence sample by sample (for the precomputed responses only)."""
        (b0, b1, b2), (a1, a2) = self.b, self.a
        x1, x2, y1, y2 = state
        out = np.empty(len(x))
        for n, value in enumerate(x):
            out[n] = b0 * value + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x1, x2, y1, y2 = value, x1, out[n], y1
        return out

    def filter(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter ``x`` ``[channels, n]`` (float64) along its last axis from ``state``
        ``[channels, 4]`` (x[-1], x[-2], y[-1], y[-2]; zeros to start). Returns the output and
        the state after it."""
        channels, length = x.shape
        if length == 0:
            return x.copy(), state
        blocks = -(-length // BLOCK)
        if length % BLOCK:
            x_blocks = np.zeros((channels, blocks * BLOCK))
            x_blocks[:, :length] = x
        else:
            x_blocks = x
        x_blocks = x_blocks.reshape(channels, blocks, BLOCK)
        # Each block's response with the outputs before it taken as zero: its own input, and
        # the two inputs before it.
        inputs_before = np.concatenate(
            [state[:, None, :2], x_blocks[:, :-1, [BLOCK - 1, BLOCK - 2]]], axis=1
        )
        partial = inputs_before @ self._free[:2]
        for start in range(0, blocks, ROWS_PER_PRODUCT):
            rows = slice(start, start + ROWS_PER_PRODUCT)
            partial[:, rows] += x_blocks[:, rows] @ self._toeplitz.T
        # Outputs carried into each block: carried[k + 1] = carry @ carried[k] + the last two
        # of block k's partial response; carried[0] = the state's y[-1], y[-2].
        carried = np.concatenate(
            [state[:, None, 2:], partial[:, :, [BLOCK - 1, BLOCK - 2]]], axis=1
        )  # [channels, blocks + 1, 2]
        step, power = 1, self._carry
        while step < blocks + 1:
            carried[:, step:] = carried[:, step:] + carried[:, :-step] @ power.T
            step, power = 2 * step, power @ power
        output = (partial + carried[:, :-1] @ self._free[2:]).reshape(channels, -1)[:, :length]
        inputs = np.concatenate([state[:, 1::-1], x[:, -2:]], axis=1)  # ..., x[n-2], x[n-1]
        outputs = np.concatenate([state[:, :1:-1], output[:, -2:]], axis=1)
        after = np.stack([inputs[:, -1], inputs[:, -2], outputs[:, -1], outputs[:, -2]], axis=1)
        return output, after


def high_shelf(gain_db: float, q: float, frequency: float, sample_rate: int) -> Biquad:
    """RBJ's audio-EQ-cookbook high shelf."""
    amplitude = 10.0 ** (gain_db / 40.0)
    cos_w0, alpha = _angle(q, frequency, sample_rate)
    root = 2.0 * math.sqrt(amplitude) * alpha
    plus, minus = amplitude + 1.0, amplitude - 1.0
    a0 = plus - minus * cos_w0 + root
    return _normalised(
        amplitude * (plus + minus * cos_w0 + root),
        -2.0 * amplitude * (minus + plus * cos_w0),
        amplitude * (plus + minus * cos_w0 - root),
        a0,
        2.0 * (minus - plus * cos_w0),
        plus - minus * cos_w0 - root,
    )


def high_pass(q: float, frequency: float, sample_rate: int) -> Biquad:
    """RBJ's audio-EQ-cookbook high pass."""
    cos_w0, alpha = _angle(q, frequency, sample_rate)
    edge = (1.0 + cos_w0) / 2.0
    return _normalised(edge, -2.0 * edge, edge, 1.0 + alpha, -2.0 * cos_w0, 1.0 - alpha)


def _angle(q: float, frequency: float, sample_rate: int) -> tuple[float, float]:
    w0 = 2.0 * math.pi * frequency / sample_rate
    return math.cos(w0), math.sin(w0) / (2.0 * q)


def _normalised(b0: float, b1: float, b2: float, a0: float, a1: float, a2: float) -> Biquad:
    return Biquad((b0 / a0, b1 / a0, b2 / a0), (a1 / a0, a2 / a0))
