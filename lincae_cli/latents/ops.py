"""Arithmetic on latent files: mix, gain, subtract, upmix, and the gain/loudness maths behind them.

The model's latent space is (approximately) linear: decoding ``a * x + b * y`` gives
``a * decode(x) + b * decode(y)``. These are pure functions on `LatentFile` objects; nothing
here reads or writes files. All sums are float32.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

from lincae_cli.errors import LincaeError
from lincae_cli.latents import edit
from lincae_cli.latents.compat import check_all_compatible
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry

# A gain on the command line, as sox's `gain` reads it: a number is decibels ("-6", "+3dB",
# "-6 db"; "-inf" is silence); "x" before a number makes it a linear factor ("x0.5", "x-1").
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_GAIN_PATTERN = re.compile(
    rf"\s*(?:x\s*(?P<linear>{_NUMBER})|(?P<db>{_NUMBER}|-inf)\s*(?:db)?)\s*", re.IGNORECASE
)
_MAX_GAIN_DB = 6000.0  # 10 ** (6000 / 20) is near the largest float; beyond it is out of range


def db_to_linear(gain_db: float) -> float:
    """Amplitude factor for a gain in decibels: ``10 ** (gain_db / 20)``."""
    return 10.0 ** (gain_db / 20.0)


def linear_to_db(gain_linear: float) -> float:
    """Gain in decibels of an amplitude factor: ``20 * log10(|gain_linear|)`` (-inf for 0)."""
    magnitude = abs(gain_linear)
    return -math.inf if magnitude == 0.0 else 20.0 * math.log10(magnitude)


def parse_gain(text: str) -> float:
    """Parse a gain given on the command line into a linear factor.

    As in sox's ``gain``, a number is decibels: ``"-6"``, ``"-6dB"``, ``"+3 dB"``; ``"-inf"``
    (or ``"-infdB"``) is silence (factor 0). A linear factor is written with an ``x``:
    ``"x0.5"``; only a negative factor (``"x-1"``) inverts polarity. Anything else raises
    `LincaeError`.
    """
    match = _GAIN_PATTERN.fullmatch(text)
    if match is None:
        raise LincaeError(
            f"cannot read gain {text!r}: use decibels like '-6' or '-6dB', or a linear factor "
            "like 'x0.5' ('x-1' inverts polarity)"
        )
    if match.group("linear") is not None:
        gain_linear = float(match.group("linear"))
    elif match.group("db").lower() == "-inf":
        gain_linear = 0.0
    else:
        gain_db = float(match.group("db"))
        gain_linear = db_to_linear(gain_db) if abs(gain_db) < _MAX_GAIN_DB else math.inf
    if not math.isfinite(gain_linear):
        raise LincaeError(f"gain {text!r} is out of range")
    return gain_linear


def parse_gain_db(text: str) -> float:
    """A gain as `parse_gain` reads it, in decibels (-inf for silence); polarity flips are
    refused (an envelope scales, it does not invert)."""
    gain_linear = parse_gain(text)
    if gain_linear < 0:
        raise LincaeError(f"gain {text!r}: a negative factor has no level in dB")
    return linear_to_db(gain_linear)


def gain_for_target_lufs(source_lufs: float, target_lufs: float) -> float:
    """Linear gain that brings audio measured at ``source_lufs`` to ``target_lufs``.

    Integrated loudness is homogeneous: scaling audio by ``a`` shifts it by ``20*log10|a|`` LU.
    """
    if not (math.isfinite(source_lufs) and math.isfinite(target_lufs)):
        raise LincaeError(
            f"cannot compute a gain from loudness {source_lufs} LUFS to {target_lufs} LUFS"
        )
    return db_to_linear(target_lufs - source_lufs)


def chunking_differs(files: Sequence[LatentFile]) -> bool:
    """Whether ``files`` were encoded with different chunk settings (which only matters for
    files longer than a chunk: their latents then differ slightly near chunk boundaries)."""
    return any(file.meta.chunking != files[0].meta.chunking for file in files[1:])


def mix(
    files: Sequence[LatentFile],
    gains_linear: Sequence[float] | None = None,
    pad: bool = False,
    names: Sequence[str] | None = None,
    positions: Sequence[int] | None = None,
    silence: np.ndarray | None = None,
) -> LatentFile:
    """Sum ``gains_linear[i] * files[i].latents`` in float32.

    Latents are ``[channels, latent_channels, frames]``; all files must be compatible (see
    `check_compatible`; mono files among stereo ones are upmixed first, see
    `upmix_to_stereo`) and have the same frame count unless ``pad`` is true, in which case
    shorter ones are padded with silence at the end to the longest. ``positions`` (samples
    at the output's rate, see `edit.place`) start each input there instead of at 0; the
    output covers them all. ``silence`` (the model's silence latent ``b``) makes the sum
    exact for an affine encoder: ``Σ gᵢzᵢ + (1 - Σ gᵢ)·b``. ``names`` (file names, for
    messages and provenance) default to ``input 1``, ``input 2``, ...
    """
    return _weighted_sum(files, gains_linear, pad, names, "mix", positions, silence)


def subtract(
    mix_file: LatentFile,
    others: Sequence[LatentFile],
    pad: bool = False,
    names: Sequence[str] | None = None,
    silence: np.ndarray | None = None,
) -> LatentFile:
    """``mix_file - sum(others)``: `mix` with gains ``[1, -1, -1, ...]`` (with ``silence``:
    ``z₁ - z₂ + b`` for one other).

    ``names`` covers ``[mix_file, *others]``.
    """
    files = [mix_file, *others]
    gains = [1.0] + [-1.0] * len(others)
    return _weighted_sum(files, gains, pad, names, "subtract", None, silence)


def gain(file: LatentFile, gain_linear: float, silence: np.ndarray | None = None) -> LatentFile:
    """Scale the latents by ``gain_linear``; the loudness estimate moves by ``20*log10|a|``.

    With ``silence`` (``b``): ``a·z + (1 - a)·b``, exact for an affine encoder.
    """
    if not math.isfinite(gain_linear):
        raise LincaeError(f"gain {gain_linear} is not a finite number")
    meta = dataclasses.replace(
        file.meta,
        provenance=[
            *file.meta.provenance,
            provenance_entry("gain", gain_linear=gain_linear, gain_db=_json_db(gain_linear)),
        ],
        **_scaled_loudness(file.meta, gain_linear),
    )
    latents = np.asarray(file.latents, dtype=np.float32) * np.float32(gain_linear)
    if silence is not None:
        latents += np.float32(1.0 - gain_linear) * np.asarray(silence, np.float32)[None, :, None]
    return LatentFile(latents=latents, meta=meta)


def upmix_to_stereo(file: LatentFile) -> LatentFile:
    """A mono file as stereo: its one latent channel on both sides, ``[2, latent_channels,
    frames]``.

    Exact, since every audio channel is encoded on its own: decoding gives the mono audio on
    both channels. Provenance gains an ``upmix`` entry (``channels_from`` 1, ``channels_to``
    2); the loudness rises by ``10*log10(2)`` LU (BS.1770 sums the powers of L and R, both
    weighted 1).
    """
    if file.channels != 1:
        raise LincaeError(f"only mono latents can be upmixed, not {file.channels} channels")
    loudness = file.meta.source_loudness_lufs
    meta = dataclasses.replace(
        file.meta,
        channels=2,
        source_loudness_lufs=None if loudness is None else loudness + 10 * math.log10(2),
        provenance=[
            *file.meta.provenance,
            provenance_entry("upmix", channels_from=1, channels_to=2),
        ],
    )
    latents = np.repeat(np.asarray(file.latents, dtype=np.float32), 2, axis=0)
    return LatentFile(latents=latents, meta=meta)


def _upmix_mono_among_stereo(files: Sequence[LatentFile]) -> list[LatentFile]:
    """``files`` with the mono ones upmixed when the others are stereo (any other mixture of
    channel counts is left for `check_compatible` to refuse)."""
    if {file.channels for file in files} != {1, 2}:
        return list(files)
    return [upmix_to_stereo(file) if file.channels == 1 else file for file in files]


def _weighted_sum(
    files: Sequence[LatentFile],
    gains_linear: Sequence[float] | None,
    pad: bool,
    names: Sequence[str] | None,
    op: str,
    positions: Sequence[int] | None = None,
    silence: np.ndarray | None = None,
) -> LatentFile:
    if not files:
        raise LincaeError(f"{op} needs at least one latent file")
    names = list(names) if names is not None else [f"input {i + 1}" for i in range(len(files))]
    gains = [1.0] * len(files) if gains_linear is None else [float(g) for g in gains_linear]
    starts = [0] * len(files) if positions is None else [int(p) for p in positions]
    if not len(names) == len(gains) == len(starts) == len(files):
        raise ValueError(f"{len(files)} files but {len(gains)} gains and {len(names)} names")
    for value in gains:
        if not math.isfinite(value):
            raise LincaeError(f"gain {value} is not a finite number")
    if any(start < 0 for start in starts):
        raise LincaeError(f"{op}: positions must be 0 or later")
    files = _upmix_mono_among_stereo(files)
    check_all_compatible(files, names)  # before lengths: a different model says more

    frames = [file.frames for file in files]
    if len(set(frames)) > 1 and not pad and positions is None:
        listing = ", ".join(f"{name}: {count}" for name, count in zip(names, frames, strict=True))
        raise LincaeError(
            f"cannot {op} latent files of different lengths ({listing} frames); "
            "pad the shorter ones with silence to allow it"
        )
    placed = [
        edit.Placed(file, name, position=start, gain=value)
        for file, name, start, value in zip(files, names, starts, gains, strict=True)
    ]
    result = edit.place(placed, op, silence=silence, extra={"pad": pad})
    together = positions is None and len({file.meta.num_samples for file in files}) == 1
    meta = dataclasses.replace(result.meta, **_mixed_loudness(files, gains, together))
    return LatentFile(latents=result.latents, meta=meta)


def _scaled_loudness(meta: LatentMeta, gain_linear: float) -> dict[str, object]:
    """Loudness fields after scaling by ``gain_linear`` (unknown once scaled to silence).

    A polarity flip or unit gain keeps a measured loudness exact; any other gain relies on
    the decoder's linearity, so the result is an estimate.
    """
    if meta.source_loudness_lufs is None or gain_linear == 0.0:
        return {"source_loudness_lufs": None, "loudness_is_estimate": False}
    if abs(gain_linear) == 1.0:
        return {
            "source_loudness_lufs": meta.source_loudness_lufs,
            "loudness_is_estimate": meta.loudness_is_estimate,
        }
    return {
        "source_loudness_lufs": meta.source_loudness_lufs + linear_to_db(gain_linear),
        "loudness_is_estimate": True,
    }


def _mixed_loudness(
    files: Sequence[LatentFile], gains: Sequence[float], together: bool
) -> dict[str, object]:
    """Loudness fields of a sum: a single audible input's, scaled; for several, an estimate
    where one holds (below); else unknown.

    The loudness of a sum depends on how its inputs correlate, which we cannot know. Inputs
    that do not correlate add their powers, ``10·log10 Σ gᵢ²·10^(Lᵢ/10)``; `lincae eval` shows
    the decoded sums of held-out clips and stems closer to their true level when brought to it
    (docs/metrics.md, Level). It is recorded (as an estimate) only when every audible input has
    a known loudness and a positive gain (a difference can cancel to near silence) and all
    start together with one length (``together``: no positions, same ``num_samples``).
    """
    audible = [(file, value) for file, value in zip(files, gains, strict=True) if value != 0.0]
    if len(audible) == 1:
        file, value = audible[0]
        return _scaled_loudness(file.meta, value)
    loudness = [file.meta.source_loudness_lufs for file, _ in audible]
    if not audible or not together or any(value < 0 for _, value in audible) or None in loudness:
        return {"source_loudness_lufs": None, "loudness_is_estimate": False}
    power = sum(
        value * value * 10.0 ** (lufs / 10.0)
        for (_, value), lufs in zip(audible, loudness, strict=True)
        if lufs is not None
    )
    return {"source_loudness_lufs": 10.0 * math.log10(power), "loudness_is_estimate": True}


def _json_db(gain_linear: float) -> float | None:
    """Gain in dB for provenance; None for a zero gain (JSON has no -inf)."""
    gain_db = linear_to_db(gain_linear)
    return None if math.isinf(gain_db) else gain_db
