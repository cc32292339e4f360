"""Integrated loudness (ITU-R BS.1770 / EBU R128): of whole arrays with pyloudnorm, and of
audio fed block by block (`StreamingLoudness`, the same maths with constant memory); the gain
that restores a recorded loudness (`restoring_gain`)."""

from __future__ import annotations

import math

import numpy as np

from lincae_cli.audio.biquad import high_pass, high_shelf

# BS.1770's K-weighting as pyloudnorm parameterises it: a high shelf (gain dB, Q, centre Hz),
# then a high pass (Q, centre Hz).
_K_HIGH_SHELF = (4.0, 1 / math.sqrt(2), 1500.0)
_K_HIGH_PASS = (0.5, 38.0)
# BS.1770 gating: 400 ms blocks every 100 ms, absolute gate -70 LUFS, relative gate -10 LU.
_GATE_BLOCK_SECONDS = 0.4
_GATE_STEP = 0.25
_ABSOLUTE_GATE_LUFS = -70.0
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
# Audio shorter than one gating block has no measurable loudness.
MIN_DURATION_SECONDS = _GATE_BLOCK_SECONDS
# Channel weights exist for at most 5 channels (L, R, C, Ls, Rs).
MAX_CHANNELS = len(_CHANNEL_WEIGHTS)
MAX_RESTORING_DB = 24.0
"""`restoring_gain` moves the level by at most this much either way: a decoder that misses its
target by more is broken, and amplifying its output further would only amplify the damage."""


def restoring_gain(
    measured_lufs: float | None, target_lufs: float | None, max_db: float = MAX_RESTORING_DB
) -> float:
    """The linear gain that brings audio measured at ``measured_lufs`` to ``target_lufs``:
    ``10 ** ((target - measured) / 20)``, the change limited to ``±max_db``; 1.0 when either
    loudness is unknown (None or not finite).

    Integrated loudness is homogeneous (scaling by ``g`` adds ``20*log10|g|`` LU), so one
    constant gain over the whole output lands it exactly on the target.
    """
    if measured_lufs is None or target_lufs is None:
        return 1.0
    if not (math.isfinite(measured_lufs) and math.isfinite(target_lufs)):
        return 1.0
    change_db = min(max(target_lufs - measured_lufs, -max_db), max_db)
    return 10.0 ** (change_db / 20.0)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness in LUFS of ``[channels, samples]`` audio.

    Returns None when it cannot be measured: shorter than 0.4 s, silent (below the
    -70 LUFS absolute gate), or more than 5 channels.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {audio.shape}")
    channels, num_samples = audio.shape
    if channels > MAX_CHANNELS or num_samples < MIN_DURATION_SECONDS * sample_rate:
        return None
    import pyloudnorm  # imports scipy.signal (0.7 s): only where whole arrays are measured

    meter = pyloudnorm.Meter(sample_rate)
    loudness = float(meter.integrated_loudness(audio.T.astype(np.float64)))
    return loudness if math.isfinite(loudness) else None


class StreamingLoudness:
    """Integrated loudness (ITU-R BS.1770) of audio fed in blocks; pyloudnorm's maths.

    pyloudnorm measures whole arrays (a float64 copy of the file, then filtered copies); this
    keeps only the K-weighting filter state and one energy sum per 100 ms per channel, and
    gates at the end exactly as `pyloudnorm.Meter.integrated_loudness` does. NumPy alone: no
    SciPy import on the encode and decode paths.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        # K-weighting (audio/biquad.py: the same filters as pyloudnorm's, without SciPy).
        self._stages = [
            high_shelf(*_K_HIGH_SHELF, sample_rate),
            high_pass(*_K_HIGH_PASS, sample_rate),
        ]
        self._states = [np.zeros((channels, 4)) for _ in self._stages]
        self._count = 0
        self._segment_sums: list[np.ndarray] = []
        self._current = np.zeros(channels)

    def _boundary(self, segment: int) -> int:
        # Same float expression as pyloudnorm's block bounds, so the blocks match exactly.
        return int(_GATE_BLOCK_SECONDS * (segment * _GATE_STEP) * self.sample_rate)

    def update(self, block: np.ndarray) -> None:
        """Feed ``[channels, n]`` samples."""
        filtered = block.astype(np.float64)
        for index, stage in enumerate(self._stages):
            filtered, self._states[index] = stage.filter(filtered, self._states[index])
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
