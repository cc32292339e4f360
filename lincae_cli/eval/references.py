"""Reference points for reading MSS values: the MSS of familiar degradations of the same clips.

MSS has no natural unit, so `lincae eval` also reports it for white noise at 10 and 20 dB SNR
and for an 11 kHz low-pass of the audio it evaluates on (docs/metrics.md, Reference points).
"""

from __future__ import annotations

import torch

from lincae_cli.eval.metrics import aligned, example_mean, mss

NOISE_REFERENCE_SNRS_DB = (10.0, 20.0)
LOWPASS_REFERENCE_HZ = 11000.0
REFERENCE_KEYS = (
    *(f"noise_{snr:g}db_mss" for snr in NOISE_REFERENCE_SNRS_DB),
    f"lowpass_{LOWPASS_REFERENCE_HZ / 1000:g}khz_mss",
)


def add_white_noise(
    clips: torch.Tensor, snr_db_target: float, generator: torch.Generator
) -> torch.Tensor:
    """Clips `[batch, samples]` plus white Gaussian noise at exactly `snr_db_target` per clip."""
    noise = torch.randn(clips.shape, generator=generator, dtype=torch.float64)
    signal_power = (clips.double() ** 2).mean(-1, keepdim=True)
    noise_power = (noise**2).mean(-1, keepdim=True)
    scale = torch.sqrt(signal_power / (noise_power * 10 ** (snr_db_target / 10)))
    return (clips.double() + scale * noise).to(clips.dtype)


def lowpass(clips: torch.Tensor, cutoff_hz: float, sample_rate: int) -> torch.Tensor:
    """Ideal (brick-wall) low-pass of clips `[batch, samples]`: one FFT over each whole clip."""
    spectrum = torch.fft.rfft(clips.double(), dim=-1)
    frequencies = torch.fft.rfftfreq(clips.shape[-1], d=1.0 / sample_rate)
    spectrum[..., frequencies > cutoff_hz] = 0
    return torch.fft.irfft(spectrum, n=clips.shape[-1], dim=-1).to(clips.dtype)


def reference_points(
    clips: torch.Tensor, sample_rate: int, seed: int = 0, margin: int = 0
) -> dict[str, float]:
    """MSS of familiar degradations of clips `[batch, samples]`, to read the other MSS against.

    Keys (`REFERENCE_KEYS`): `noise_10db_mss`, `noise_20db_mss` (white noise at that SNR),
    `lowpass_11khz_mss`.
    """
    generator = torch.Generator().manual_seed(seed)
    degraded = [add_white_noise(clips, snr, generator) for snr in NOISE_REFERENCE_SNRS_DB]
    degraded.append(lowpass(clips, LOWPASS_REFERENCE_HZ, sample_rate))
    return {
        key: example_mean(mss(*aligned(audio, clips, margin)))
        for key, audio in zip(REFERENCE_KEYS, degraded, strict=True)
    }
