"""Time on a latent file: positions written as sox writes them, and gain curves per frame.

Pure functions over numbers and NumPy arrays (no torch). Output time ``t`` (seconds) is
measured from the first sample a file decodes to, after its ``offset_samples``. Latent frame
``k`` is decoded from STFT frames ``[k·D, (k+1)·D)``; its samples overlap the next frame's by
``n_fft - stft_hop``, so the stretch it owns is the hop-long span centred in what it covers:
model-rate samples ``[k·H + c, (k+1)·H + c)`` of the decoded audio, ``c = (n_fft - stft_hop)
/ 2`` (docs/lat-format.md, "Time framing"). A time-varying gain ``g(t)`` becomes one factor per
frame, the mean of ``g`` over that span: a fade of latents is the fade of the audio at the
latents' resolution (93 ms at 44.1 kHz).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lincae_cli.errors import LincaeError

# A position: "441000s" (samples), "12.5", "1:02.5", "1:02:03.5"; "-" in front counts from
# the end, "+" (END only) from START.
_POSITION = re.compile(
    r"(?P<sign>[-+]?)(?:(?P<samples>\d+)s|(?P<clock>(?:\d+:){0,2}\d+(?:\.\d*)?))"
)
_SAMPLES_PER_FRAME_SPAN = 32  # points at which a gain curve is averaged over a frame's span
FADE_SHAPES = ("linear", "cosine", "log")
_LOG_FADE_RANGE_DB = 60.0  # a "log" fade climbs linearly in dB over this range


def parse_position(text: str, sample_rate: int, length: int, what: str = "time") -> int:
    """A position in ``[0, length]`` samples at ``sample_rate``, written as sox writes times.

    ``12.5`` or ``1:02.5`` (seconds, ``mm:ss``, ``hh:mm:ss``), ``441000s`` (samples);
    ``-2.5`` is 2.5 s before the end. Rounded to the nearest sample.
    """
    samples, sign = _samples_of(text, sample_rate, what)
    position = length - samples if sign == "-" else samples
    if sign == "+":
        raise LincaeError(f"{what} {text!r}: a '+' length is only allowed for END")
    return _within(position, length, text, sample_rate, what)


def parse_end(text: str, start: int, sample_rate: int, length: int) -> int:
    """END of a trim: a position like `parse_position`, or ``+LENGTH`` counted from ``start``."""
    samples, sign = _samples_of(text, sample_rate, "END")
    if sign == "+":
        return _within(start + samples, length, text, sample_rate, "END")
    return parse_position(text, sample_rate, length, "END")


def parse_seconds(text: str, what: str) -> float:
    """A duration in seconds (``2``, ``0.5``, ``1:30``) for options like ``--in``."""
    match = _POSITION.fullmatch(text.strip())
    if match is None or match["sign"] or match["samples"]:
        raise LincaeError(f"{what} {text!r} is not a duration in seconds (e.g. 2.5 or 1:30)")
    return _clock_seconds(match["clock"])


def _samples_of(text: str, sample_rate: int, what: str) -> tuple[int, str]:
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise LincaeError(
            f"{what} {text!r} is not a time: write seconds (12.5), mm:ss.sss (1:02.5) or "
            "samples (441000s); a leading '-' counts from the end"
        )
    if match["samples"] is not None:
        return int(match["samples"]), match["sign"]
    return round(_clock_seconds(match["clock"]) * sample_rate), match["sign"]


def _clock_seconds(clock: str) -> float:
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def _within(position: int, length: int, text: str, sample_rate: int, what: str) -> int:
    if not 0 <= position <= length:
        raise LincaeError(
            f"{what} {text!r} is outside the file (0 to {length / sample_rate:.3f} s, "
            f"{length} samples)"
        )
    return position


def parse_envelope(text: str, parse_gain_db: Callable[[str], float]) -> list[tuple[float, float]]:
    """``"0:0dB,5:-12dB,8:0dB"`` -> ``[(0.0, 0.0), (5.0, -12.0), (8.0, 0.0)]`` (seconds, dB).

    Each breakpoint is ``TIME:GAIN``; TIME in seconds (or ``mm:ss``... the last ``:``
    separates the gain), GAIN as ``gain`` takes it (``parse_gain_db``). Times must increase.
    """
    points: list[tuple[float, float]] = []
    for item in text.split(","):
        time_text, sep, gain_text = item.strip().rpartition(":")
        if not sep or not time_text:
            raise LincaeError(f"envelope point {item.strip()!r} is not TIME:GAIN (e.g. 5:-12dB)")
        time = parse_seconds(time_text, "envelope time")
        if points and time <= points[-1][0]:
            raise LincaeError(f"envelope times must increase ({item.strip()!r})")
        points.append((time, parse_gain_db(gain_text)))
    return points


@dataclass(frozen=True)
class FrameGrid:
    """Where a file's latent frames sit in its output time.

    ``hop``: latent hop and ``centre``: ``c`` above, both model-rate samples; ``offset``: the
    file's ``offset_samples`` at the model rate; ``rate``: the model rate.
    """

    frames: int
    hop: int
    centre: float
    offset: float
    rate: int

    def span_times(self) -> np.ndarray:
        """``[frames, P]``: output times (s) at which frame k's span is sampled."""
        fractions = (np.arange(_SAMPLES_PER_FRAME_SPAN) + 0.5) / _SAMPLES_PER_FRAME_SPAN
        starts = np.arange(self.frames)[:, None] * self.hop + self.centre - self.offset
        return (starts + fractions[None, :] * self.hop) / self.rate

    def per_frame(self, curve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``[frames]``: the mean of ``curve(t)`` over each frame's span."""
        return curve(self.span_times()).mean(axis=1).astype(np.float32)


def fade_curve(shape: str) -> Callable[[np.ndarray], np.ndarray]:
    """``x in [0, 1]`` -> gain, rising from 0 to 1: linear, cosine (an S), log (dB-linear)."""
    if shape == "linear":
        return lambda x: x
    if shape == "cosine":
        return lambda x: 0.5 - 0.5 * np.cos(math.pi * x)
    if shape == "log":
        return lambda x: np.where(x > 0, 10 ** (-_LOG_FADE_RANGE_DB * (1 - x) / 20), 0.0)
    raise LincaeError(f"fade shape must be one of {', '.join(FADE_SHAPES)}, not {shape!r}")


def fade_gain(
    fade_in: float, fade_out: float, length: float, shape: str
) -> Callable[[np.ndarray], np.ndarray]:
    """g(t) of a fade-in over ``[0, fade_in]`` and a fade-out over ``[length - fade_out,
    length]`` (seconds); 0 outside ``[0, length]`` once a fade is asked at that end."""
    rise = fade_curve(shape)

    def gain(t: np.ndarray) -> np.ndarray:
        g = np.ones_like(t)
        if fade_in > 0:
            g = g * rise(np.clip(t / fade_in, 0.0, 1.0))
        if fade_out > 0:
            g = g * rise(np.clip((length - t) / fade_out, 0.0, 1.0))
        return g

    return gain


def envelope_gain(points: Sequence[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    """g(t) through breakpoints ``(seconds, dB)``: linear in dB between them, held outside.

    ``-inf`` dB (mute) is interpolated as -120 dB and is exactly 0 where it holds.
    """
    times = np.array([time for time, _ in points], dtype=np.float64)
    levels = np.array([max(level, -120.0) for _, level in points], dtype=np.float64)

    def gain(t: np.ndarray) -> np.ndarray:
        g = 10 ** (np.interp(t, times, levels) / 20)
        return np.where(g <= 1e-6, 0.0, g)

    return gain


def step_weights(boundary: float, crossfade: float) -> Callable[[np.ndarray], np.ndarray]:
    """The incoming side's weight at a seam: 0 before ``boundary``, 1 after ``boundary +
    crossfade`` (seconds), linear between; a hard cut when ``crossfade`` is 0."""
    if crossfade <= 0:
        return lambda t: (t >= boundary).astype(np.float64)
    return lambda t: np.clip((t - boundary) / crossfade, 0.0, 1.0)
