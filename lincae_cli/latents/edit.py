"""Editing latent files in time: trim, pad, fades, gain envelopes, placing and joining files.

Pure functions on `LatentFile` objects with NumPy (no torch, nothing read or written). Times
are samples at the file's ``source_sample_rate`` counted on its output (after
``offset_samples``), as `lincae_cli.latents.timeline` parses them. Only whole latent frames
can move: a cut inside a frame keeps the frame and records the rest in ``offset_samples``, so
decoding stays sample-accurate; a file placed at a time that is not on the output's frame grid
lands on the nearest frame (within half a latent frame, 46 ms at 44.1 kHz), and its provenance
records where (``position_samples``).

``silence`` (optional, ``[latent_channels]``, stored values, i.e. scaled like the latents) is
the model's latent of silence ``b``: given it, the operations are exact for an affine encoder
``Enc(x) = L·x + b`` (docs/latent-algebra.md): padding holds ``b`` instead of zeros and every
weighted sum adds ``(1 - Σ weights)·b``. Without it, they assume ``b = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from lincae_cli.audio.rates import resampled_length
from lincae_cli.errors import LincaeError
from lincae_cli.latents.compat import check_all_compatible
from lincae_cli.latents.framing import FRAMING_KEYS, expected_frames, framing_of
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry
from lincae_cli.latents.timeline import FrameGrid, envelope_gain, fade_gain, step_weights

Curve = Callable[[np.ndarray], np.ndarray]


def trim(file: LatentFile, start: int, end: int, silence: np.ndarray | None = None) -> LatentFile:
    """The samples ``[start, end)`` of ``file``'s output; decodes to exactly ``end - start``."""
    meta = file.meta
    _require_framing(meta, "trim")
    if not 0 <= start < end <= meta.num_samples:
        raise LincaeError(
            f"cannot trim [{start}, {end}) from {meta.num_samples} samples: "
            "START must come before END, both within the file"
        )
    rate, model_rate, hop = meta.source_sample_rate, meta.model_sample_rate, meta.latent_hop_samples
    absolute = meta.offset_samples + start  # in the decoded audio of frame 0 on
    first = absolute * model_rate // (rate * hop)  # the frame holding the new first sample
    offset = absolute - round(first * hop * rate / model_rate)
    count = _frame_count(meta, offset, end - start)
    latents = _frames(file.latents, first, count, silence)
    edited = dataclasses.replace(
        meta,
        offset_samples=offset,
        num_samples=end - start,
        source_loudness_lufs=None,  # the loudness of a part is not the whole's
        loudness_is_estimate=False,
        provenance=[
            *meta.provenance,
            provenance_entry("trim", start_samples=start, end_samples=end),
        ],
    )
    return LatentFile(latents=latents, meta=edited)


def pad(file: LatentFile, start: int, end: int, silence: np.ndarray | None = None) -> LatentFile:
    """``start`` samples of silence before ``file`` and ``end`` after it.

    Integrated loudness (BS.1770) gates silence out, so the recorded loudness is kept.
    """
    meta = file.meta
    _require_framing(meta, "pad")
    if start < 0 or end < 0:
        raise LincaeError("padding must be zero or more seconds")
    hop_source = meta.latent_hop_samples * meta.source_sample_rate / meta.model_sample_rate
    shift = max(0, math.ceil((start - meta.offset_samples) / hop_source))  # frames to prepend
    offset = meta.offset_samples + round(shift * hop_source) - start
    num_samples = start + meta.num_samples + end
    latents = _frames(file.latents, -shift, _frame_count(meta, offset, num_samples), silence)
    edited = dataclasses.replace(
        meta,
        offset_samples=offset,
        num_samples=num_samples,
        provenance=[
            *meta.provenance,
            provenance_entry("pad", start_samples=start, end_samples=end),
        ],
    )
    return LatentFile(latents=latents, meta=edited)


def fade(
    file: LatentFile,
    fade_in: float,
    fade_out: float,
    shape: str = "linear",
    silence: np.ndarray | None = None,
) -> LatentFile:
    """Fade in over the first ``fade_in`` seconds and out over the last ``fade_out``."""
    meta = file.meta
    if fade_in < 0 or fade_out < 0 or fade_in + fade_out > meta.duration_seconds + 1e-9:
        raise LincaeError(
            f"fades of {fade_in:g} s in and {fade_out:g} s out do not fit in "
            f"{meta.duration_seconds:.3f} s"
        )
    curve = fade_gain(fade_in, fade_out, meta.duration_seconds, shape)
    entry = provenance_entry("fade", in_seconds=fade_in, out_seconds=fade_out, shape=shape)
    return _shaped(file, curve, entry, silence)


def envelope(
    file: LatentFile, points: Sequence[tuple[float, float]], silence: np.ndarray | None = None
) -> LatentFile:
    """A gain that follows breakpoints ``(seconds, dB)``, linear in dB between them."""
    entry = provenance_entry("gain", envelope=[[time, level] for time, level in points])
    return _shaped(file, envelope_gain(points), entry, silence)


def _shaped(
    file: LatentFile, curve: Curve, entry: dict[str, object], silence: np.ndarray | None
) -> LatentFile:
    meta = file.meta
    _require_framing(meta, str(entry["op"]))
    gains = grid_of(meta, file.frames).per_frame(curve)
    latents = _affine(file.latents * gains, 1.0 - gains, silence)
    edited = dataclasses.replace(
        meta,
        source_loudness_lufs=None,  # a time-varying gain: the new loudness is unknown
        loudness_is_estimate=False,
        provenance=[*meta.provenance, entry],
    )
    return LatentFile(latents=latents, meta=edited)


@dataclasses.dataclass(frozen=True)
class Placed:
    """One input of `place`: ``file`` starting at ``position`` (output samples), scaled by
    ``gain`` and, when given, by ``weight(t)`` (output seconds)."""

    file: LatentFile
    name: str
    position: int = 0
    gain: float = 1.0
    weight: Curve | None = None


def place(
    inputs: Sequence[Placed],
    op: str,
    rate: int | None = None,
    silence: np.ndarray | None = None,
    extra: dict[str, object] | None = None,
) -> LatentFile:
    """Sum the inputs, each moved to its position: ``Σ gain·weight·z`` (plus ``(1 - Σ
    gain·weight)·b`` with ``silence``), covering every input.

    The inputs must be compatible (same model and channels; `compat.check_compatible`). ``rate``:
    the output's sample rate; by default the inputs' common ``source_sample_rate``, or the
    model rate when they differ. The first input lands exactly at its position; the others on
    the nearest latent frame. Provenance: one ``op`` entry with the inputs (``name``,
    ``gain_linear``, ``position_samples`` where each landed, ``provenance``) and ``extra``.
    """
    check_all_compatible([item.file for item in inputs], [item.name for item in inputs])
    first = inputs[0].file.meta
    layout = _layout(inputs, rate)
    out_meta = dataclasses.replace(
        first,
        source_sample_rate=layout.rate,
        offset_samples=layout.offset,
        num_samples=layout.num_samples,
        # Not the first input's: a joined or summed file's loudness is unknown (decoding would
        # restore it; mix, which knows the case of one audible input, sets its own).
        source_loudness_lufs=None,
        loudness_is_estimate=False,
    )
    frames = _frame_count(out_meta, layout.offset, layout.num_samples)
    total = np.zeros((inputs[0].file.channels, inputs[0].file.latent_channels, frames), np.float32)
    weights = [np.full(frames, item.gain, np.float32) for item in inputs]
    for item, row in zip(inputs, weights, strict=True):
        if item.weight is not None:
            row *= grid_of(out_meta, frames).per_frame(item.weight)
    if any(item.weight is not None for item in inputs):
        weights = _shared_among_present(weights, inputs, layout.shifts)
    weight_sum = np.zeros(frames, np.float32)
    for item, shift, row in zip(inputs, layout.shifts, weights, strict=True):
        total += _frames(item.file.latents, -shift, frames, silence) * row
        weight_sum += row
    latents = _affine(total, 1.0 - weight_sum, silence)

    records = [
        {
            "name": item.name,
            "gain_linear": item.gain,
            "position_samples": at,
            "provenance": item.file.meta.provenance,
        }
        for item, at in zip(inputs, layout.landed, strict=True)
    ]
    chunking = first.chunking
    if any(item.file.meta.chunking != chunking for item in inputs):
        chunking = {key: chunking[key] for key in FRAMING_KEYS if key in chunking}
    meta = dataclasses.replace(
        out_meta,
        chunking=chunking,
        provenance=[provenance_entry(op, inputs=records, **(extra or {}))],
    )
    return LatentFile(latents=latents, meta=meta)


@dataclasses.dataclass(frozen=True)
class _Layout:
    rate: int  # of the output
    offset: int  # the output's offset_samples
    num_samples: int
    shifts: list[int]  # latent frames each input moves by
    landed: list[int]  # where each input starts in the output, samples


def _layout(inputs: Sequence[Placed], rate: int | None) -> _Layout:
    """Where `place` puts each input (the arithmetic only, no latents)."""
    first = inputs[0].file.meta
    model_rate, hop = first.model_sample_rate, first.latent_hop_samples
    rates = {item.file.meta.source_sample_rate for item in inputs}
    rate = rate or (rates.pop() if len(rates) == 1 else model_rate)
    scale = model_rate / rate  # output samples -> model-rate samples
    # In model-rate samples: each input's first kept sample after its frame 0, and where it
    # must land. The output's own offset anchors the first input and keeps every shift >= 0.
    starts = [
        item.file.meta.offset_samples * model_rate / item.file.meta.source_sample_rate
        for item in inputs
    ]
    targets = [item.position * scale for item in inputs]
    lead = max(start - target for start, target in zip(starts, targets, strict=True))
    anchor = starts[0] - targets[0]
    offset_model = anchor + math.ceil((lead - anchor) / hop - 1e-9) * hop
    shifts = [round((offset_model + t - s) / hop) for s, t in zip(starts, targets, strict=True)]
    landed = [
        round((shift * hop + s - offset_model) / scale)
        for shift, s in zip(shifts, starts, strict=True)
    ]
    lengths = [
        resampled_length(item.file.meta.num_samples, item.file.meta.source_sample_rate, rate)
        for item in inputs
    ]
    num_samples = max(at + length for at, length in zip(landed, lengths, strict=True))
    return _Layout(rate, round(offset_model / scale), num_samples, shifts, landed)


def concat(
    files: Sequence[LatentFile],
    names: Sequence[str],
    crossfade: float = 0.0,
    rate: int | None = None,
    silence: np.ndarray | None = None,
) -> LatentFile:
    """``files`` one after the other; each seam a linear crossfade of ``crossfade`` seconds
    (the next file starts that much before the previous one ends), or a cut blended over the
    one latent frame that holds it."""
    rates = {file.meta.source_sample_rate for file in files}
    if rate is None and len(rates) > 1:
        listing = ", ".join(
            f"{name}: {file.meta.source_sample_rate} Hz"
            for name, file in zip(names, files, strict=True)
        )
        raise LincaeError(f"cannot join files at different sample rates ({listing}); give a rate")
    rate = rate or rates.pop()
    for file, name in zip(files, names, strict=True):
        _require_framing(file.meta, "concat")
        if crossfade > file.meta.duration_seconds:
            raise LincaeError(f"{name}: the crossfade is longer than the file")
    overlap = round(crossfade * rate)
    # Positions one by one: each file starts where the previous one really landed, ends.
    placed: list[Placed] = [Placed(files[0], names[0])]
    for file, name in zip(files[1:], names[1:], strict=True):
        end = _layout(placed, rate).num_samples
        placed.append(Placed(file, name, position=end - overlap))
        landed = _layout(placed, rate).landed[-1]
        placed[-1] = dataclasses.replace(placed[-1], position=landed)
    seconds = [item.position / rate for item in placed]
    for index, item in enumerate(placed):
        fade_in = step_weights(seconds[index], crossfade) if index else None
        fade_out = step_weights(seconds[index + 1], crossfade) if index + 1 < len(placed) else None
        placed[index] = dataclasses.replace(item, weight=_seam(fade_in, fade_out))
    return place(placed, "concat", rate, silence, extra={"crossfade_seconds": crossfade})


def _shared_among_present(
    weights: list[np.ndarray], inputs: Sequence[Placed], shifts: Sequence[int]
) -> list[np.ndarray]:
    """Seam weights shared among the inputs that have a frame there: a frame only one input
    covers is that input's whole (a file that ends on a frame boundary joins exactly), and
    where several do, their weights are scaled to sum as before."""
    frames = len(weights[0])
    present = [
        ((np.arange(frames) - shift >= 0) & (np.arange(frames) - shift < item.file.frames))
        for item, shift in zip(inputs, shifts, strict=True)
    ]
    asked = np.sum(weights, axis=0)
    kept = np.sum([row * mask for row, mask in zip(weights, present, strict=True)], axis=0)
    scale = np.divide(asked, kept, out=np.zeros_like(asked), where=kept > 0)
    return [
        np.where(kept > 0, row * mask * scale, row).astype(np.float32)
        for row, mask in zip(weights, present, strict=True)
    ]


def _seam(fade_in: Curve | None, fade_out: Curve | None) -> Curve:
    def weight(t: np.ndarray) -> np.ndarray:
        w = np.ones_like(t) if fade_in is None else fade_in(t)
        return w if fade_out is None else w * (1.0 - fade_out(t))

    return weight


def grid_of(meta: LatentMeta, frames: int) -> FrameGrid:
    """The frame grid of a file with these metadata (reference framing only)."""
    framing = framing_of(meta.chunking)
    if framing is None:
        raise LincaeError("this file has no time framing; re-encode it")
    return FrameGrid(
        frames=frames,
        hop=meta.latent_hop_samples,
        centre=(framing["n_fft"] - framing["stft_hop"]) / 2,
        offset=meta.offset_samples * meta.model_sample_rate / meta.source_sample_rate,
        rate=meta.model_sample_rate,
    )


def _require_framing(meta: LatentMeta, op: str) -> None:
    if framing_of(meta.chunking) is None:
        raise LincaeError(
            f"cannot {op}: the file was encoded before lincae recorded its time framing; "
            "re-encode it with this lincae"
        )


def _frame_count(meta: LatentMeta, offset: int, num_samples: int) -> int:
    span = resampled_length(offset + num_samples, meta.source_sample_rate, meta.model_sample_rate)
    return expected_frames(meta.chunking, span, meta.latent_hop_samples)


def _frames(latents: np.ndarray, first: int, count: int, silence: np.ndarray | None) -> np.ndarray:
    """Frames ``[first, first + count)`` of ``latents``; those outside it hold ``silence``
    (or zeros)."""
    channels, latent_channels, frames = latents.shape
    out = np.empty((channels, latent_channels, count), np.float32)
    out[...] = 0.0 if silence is None else np.asarray(silence, np.float32)[None, :, None]
    lo, hi = max(first, 0), min(first + count, frames)
    if lo < hi:
        out[..., lo - first : hi - first] = latents[..., lo:hi]
    return out


def _affine(latents: np.ndarray, rest: np.ndarray, silence: np.ndarray | None) -> np.ndarray:
    """``latents + rest·b`` (per frame ``rest``) when the silence latent ``b`` is known."""
    latents = np.asarray(latents, np.float32)
    if silence is None:
        return latents
    b = np.asarray(silence, np.float32)[None, :, None]
    return latents + np.asarray(rest, np.float32)[None, None, :] * b
