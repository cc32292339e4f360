"""Integrated loudness (ITU-R BS.1770 / EBU R128) with pyloudnorm."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm

# BS.1770 integrates over 400 ms gating blocks; shorter audio has no measurable loudness.
MIN_DURATION_SECONDS = 0.4
# pyloudnorm weights at most 5 channels (L, R, C, Ls, Rs).
MAX_CHANNELS = 5


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
    meter = pyloudnorm.Meter(sample_rate)
    loudness = float(meter.integrated_loudness(audio.T.astype(np.float64)))
    return loudness if math.isfinite(loudness) else None
