"""Level metrics of `lincae eval`: how loud a model decodes, in dB, as pure functions of audio.

The matched ratios compare two decodes that miss their target level by about as much, so a
decoder that compresses level still looks linear there; these errors show it. Each is a level
in dB minus the level asked for, per example, then averaged (docs/metrics.md, Level):

- reconstruction: level of Dec(Enc(x)) minus level of x, as RMS and as integrated loudness
  (BS.1770, the loudness a `.lat` records);
- gain tracking, for each a in `LEVEL_GAINS`: the level change from Dec(Enc(x)) to
  Dec(a·Enc(x)) minus 20·log10 a (what `lincae gain` asks for), in RMS dB;
- mixes: level of Dec(Σ Enc(part)) minus level of Σ part.

Each is also measured *restored*: every decoded output scaled to the loudness its `.lat` would
record, as decoding does with loudness restoring on (`restoring_gain`): the source's loudness,
plus 20·log10 a after a gain. A mix records no loudness, so decoding leaves it alone; its
restored error uses the power sum of the parts' loudness instead (`power_sum_lufs`), to show
whether that estimate would help. `restore_helps` is the rule that decides a model's default.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import torch

from lincae_cli.audio.loudness import integrated_loudness, restoring_gain
from lincae_cli.eval.codec import Decode
from lincae_cli.eval.metrics import aligned, aligned_mss, example_mean, snr_db

LEVEL_GAINS = (0.25, 0.5, 2.0, 4.0)
RESTORED_PREFIX = "restored_"
_SILENT_DB = -120.0  # RMS level of digital silence, so that differences stay finite
MIN_IMPROVEMENT_DB = 0.5
"""Restoring becomes a model's default when it brings its level errors this much closer to 0."""


class KeptDecodes:
    """A `Decode` that remembers the outputs of `keep`: decoding the same latents again (equal
    bit for bit) returns the kept audio instead of decoding twice. Decoding is deterministic
    (fixed noise), so the result is the same; it lets the level metrics share the decodes the
    linearity metrics make."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._kept: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}

    @staticmethod
    def _key(latents: torch.Tensor) -> tuple[tuple[int, ...], str]:
        data = latents.detach().cpu().contiguous().numpy().tobytes()
        return tuple(latents.shape), hashlib.sha256(data).hexdigest()

    def keep(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode ``latents`` and remember the result."""
        decoded = self._decode(latents)
        self._kept[self._key(latents)] = decoded
        return decoded

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        kept = self._kept.get(self._key(latents))
        return self._decode(latents) if kept is None else kept


def rms_db(audio: torch.Tensor) -> torch.Tensor:
    """RMS level in dB (re full scale 1.0) per example of `[batch, samples]`: `[batch]`."""
    power = audio.double().pow(2).mean(-1)
    return (10 * torch.log10(power)).clamp(min=_SILENT_DB)


def loudness_lufs(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Integrated loudness (BS.1770) per mono example of `[batch, samples]`: `[batch]`, NaN
    where it cannot be measured (shorter than 0.4 s, silent)."""
    values = [integrated_loudness(row[None].double().numpy(), sample_rate) for row in audio]
    return torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float64)


def power_sum_lufs(parts_lufs: torch.Tensor) -> torch.Tensor:
    """The loudness `[batch]` of sums of uncorrelated parts, `10·log10 Σ 10^(L/10)` over the
    last axis of `[batch, parts]` (unmeasured parts count as silent; NaN if all are)."""
    power = torch.nan_to_num(10.0 ** (parts_lufs / 10.0), nan=0.0).sum(-1)
    return torch.where(power > 0, 10 * torch.log10(power), torch.full_like(power, math.nan))


def restored(decoded: torch.Tensor, target_lufs: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """`decoded` `[batch, samples]` with each example scaled to its `target_lufs` (`[batch]`)
    by `restoring_gain` (unchanged where either loudness is unknown), as decoding does."""
    measured = loudness_lufs(decoded, sample_rate)
    gains = [
        restoring_gain(_finite_or_none(m), _finite_or_none(t))
        for m, t in zip(measured.tolist(), target_lufs.tolist(), strict=True)
    ]
    return decoded * torch.tensor(gains, dtype=decoded.dtype)[:, None]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def mean_and_worst(errors: torch.Tensor) -> tuple[float, float]:
    """The mean of the finite errors `[batch]`, and the one of largest magnitude (sign kept);
    NaN, NaN when none is finite."""
    finite = errors[torch.isfinite(errors)]
    if not finite.numel():
        return math.nan, math.nan
    return example_mean(finite), float(finite[finite.abs().argmax()])


def level_metrics(
    clips: torch.Tensor,
    decoded: torch.Tensor | None,
    scaled_decoded: Mapping[float, torch.Tensor],
    mixes: Mapping[str, tuple[torch.Tensor, torch.Tensor] | None],
    sample_rate: int,
    margin: int,
) -> dict[str, float]:
    """Every level metric (docs/metrics.md), keys `level_*` and `restored_*`.

    `clips` `[batch, samples]`; `decoded` = Dec(Enc(clips)) (None: no clips, every value NaN);
    `scaled_decoded[a]` = Dec(a·Enc(clips)) for each a in `LEVEL_GAINS`; `mixes[name]` =
    (parts `[batch, parts, samples]`, Dec(Σ Enc(part))) or None where there are none.
    """
    metrics: dict[str, float] = {}
    empty = decoded is None or not clips.shape[0]
    source_lufs = loudness_lufs(clips, sample_rate) if not empty else None
    for prefix in ("", RESTORED_PREFIX):
        recon = gains = None
        if decoded is not None and source_lufs is not None:
            plain = restored(decoded, source_lufs, sample_rate) if prefix else decoded
            recon = _recon(plain, clips, sample_rate, margin)
            if prefix:
                estimate, reference = aligned(plain, clips, margin)
                metrics["restored_recon_mss"] = example_mean(aligned_mss(plain, clips, margin))
                metrics["restored_recon_snr_db"] = example_mean(snr_db(estimate, reference))
            gains = {}
            for gain in LEVEL_GAINS:
                output = scaled_decoded[gain]
                if prefix:
                    target = source_lufs + 20 * math.log10(gain)
                    output = restored(output, target, sample_rate)
                gains[gain] = _gain_error(output, plain, gain, margin)
        elif prefix:
            metrics["restored_recon_mss"] = metrics["restored_recon_snr_db"] = math.nan
        for kind in ("rms", "loudness"):
            mean, worst = recon[kind] if recon else (math.nan, math.nan)
            metrics[f"{prefix}level_recon_{kind}_db"] = mean
            metrics[f"{prefix}level_recon_{kind}_db_worst"] = worst
        for gain in LEVEL_GAINS:
            metrics[f"{prefix}level_gain_db_a{gain:g}"] = gains[gain] if gains else math.nan
        for name, mix in mixes.items():
            value = math.nan
            if mix is not None and mix[0].shape[0]:
                value = _mix_error(*mix, sample_rate, margin, restore=bool(prefix))
            metrics[f"{prefix}level_mix_db_{name}"] = value
    return metrics


def _recon(
    decoded: torch.Tensor, clips: torch.Tensor, sample_rate: int, margin: int
) -> dict[str, tuple[float, float]]:
    estimate, reference = aligned(decoded, clips, margin)
    rms = rms_db(estimate) - rms_db(reference)
    loudness = loudness_lufs(estimate, sample_rate) - loudness_lufs(reference, sample_rate)
    return {"rms": mean_and_worst(rms), "loudness": mean_and_worst(loudness)}


def _gain_error(scaled: torch.Tensor, plain: torch.Tensor, gain: float, margin: int) -> float:
    """Mean (level of `scaled` − level of `plain`) − 20·log10 `gain`, RMS dB."""
    scaled, plain = aligned(scaled, plain, margin)
    return example_mean(rms_db(scaled) - rms_db(plain) - 20 * math.log10(gain))


def _mix_error(
    parts: torch.Tensor, summed_decoded: torch.Tensor, sample_rate: int, margin: int, restore: bool
) -> float:
    """Mean RMS dB of Dec(Σ Enc(part)) minus that of Σ part; `restore`: the decode first
    scaled to the power sum of the parts' loudness."""
    total = parts.sum(1)
    if restore:
        batch, count, samples = parts.shape
        parts_lufs = loudness_lufs(parts.reshape(batch * count, samples), sample_rate)
        target = power_sum_lufs(parts_lufs.reshape(batch, count))
        summed_decoded = restored(summed_decoded, target, sample_rate)
    estimate, reference = aligned(summed_decoded, total, margin)
    return example_mean(rms_db(estimate) - rms_db(reference))


def restore_helps(metrics: Mapping[str, float]) -> bool | None:
    """Whether restoring the recorded loudness should be a model's default, from its metrics:
    the mean magnitude of five errors (the reconstruction level in RMS dB and the tracking error
    of each gain) must drop by at least `MIN_IMPROVEMENT_DB`. None without the data to decide.

    MSS and SNR do not take part: a constant gain cannot change what the audio is, only its
    level, and both reward a noisy estimate for being too quiet (their spectral-convergence and
    error-energy terms are smallest below the level-true gain, by Cauchy–Schwarz, unless the
    spectra are proportional), so the `restored_recon_*` values are reported, not used.
    """
    keys = ["level_recon_rms_db", *(f"level_gain_db_a{gain:g}" for gain in LEVEL_GAINS)]
    off = np.array([metrics.get(key, math.nan) for key in keys], dtype=float)
    on = np.array([metrics.get(RESTORED_PREFIX + key, math.nan) for key in keys], dtype=float)
    if not (np.isfinite(off).all() and np.isfinite(on).all()):
        return None
    return bool(np.abs(on).mean() <= np.abs(off).mean() - MIN_IMPROVEMENT_DB)
