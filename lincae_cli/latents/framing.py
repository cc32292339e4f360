"""How latent frames sit in time, and how many a length of audio has: the one frame-count rule.

Since lincae took the reference packages' framing, a `.lat` file's ``chunking`` entry records
it: ``stft_start_sample`` 0 (STFT frame ``i`` covers model-rate samples ``[i·stft_hop,
i·stft_hop + n_fft)``, latent frame ``k`` the STFT frames ``[k·2^d, (k+1)·2^d)``, ``2^d =
latent_hop_samples / stft_hop``), ``stft_hop``, ``n_fft`` and ``latent_frame_rounding``, the
model's (`ModelConfig.latent_frame_rounding`). ``N`` model-rate samples have ``F = max(1, (N -
n_fft) // stft_hop + 1)`` STFT frames (shorter audio is padded to one) and ``ceil(F / 2^d)``
latent frames (``"ceil"``: linear-cae's rule and our models'), or ``max(1, floor(F / 2^d))``
(``"floor"``: music2latent crops the STFT frames after the last whole group of ``2^d``; audio
shorter than one group is padded to it). Files written before the rounding was recorded have
the other three keys and were all ``"ceil"``. Files written before these keys existed record
none of them: their STFT frames were centred on ``i·stft_hop + stft_hop/2`` (frame 0 started
``(n_fft - stft_hop) / 2`` samples before the audio) and they have ``ceil(N /
latent_hop_samples)`` frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lincae_cli.errors import LincaeError
from lincae_cli.nn.config import LATENT_FRAME_ROUNDINGS

FRAMING_KEYS = ("stft_start_sample", "stft_hop", "n_fft", "latent_frame_rounding")
DEFAULT_ROUNDING = "ceil"  # what files that record the framing but no rounding used


def stft_frames_for_samples(num_samples: int, hop: int, n_fft: int) -> int:
    """Whole STFT frames in ``num_samples`` samples, at least one (shorter audio is padded)."""
    return max(1, (num_samples - n_fft) // hop + 1)


def latent_frames_for_samples(
    num_samples: int, hop: int, n_fft: int, frames_per_latent: int, rounding: str = "ceil"
) -> int:
    """Latent frames of ``num_samples`` model-rate samples: ``ceil(F / 2^d)`` of the STFT
    frames ``F`` (as the encoder's strided convolutions round), or with ``rounding`` "floor"
    ``floor(F / 2^d)``, at least one."""
    stft_frames = stft_frames_for_samples(num_samples, hop, n_fft)
    if rounding == "floor":
        return max(1, stft_frames // frames_per_latent)
    if rounding != "ceil":
        raise ValueError(f"unknown latent frame rounding {rounding!r}")
    return -(-stft_frames // frames_per_latent)


def encoded_stft_frames(
    num_samples: int, hop: int, n_fft: int, frames_per_latent: int, rounding: str = "ceil"
) -> int:
    """The STFT frames of ``num_samples`` samples that the latents are computed from: all of
    them, or, for "floor", those of the whole groups of ``2^d`` (at least one frame)."""
    stft_frames = stft_frames_for_samples(num_samples, hop, n_fft)
    latent = latent_frames_for_samples(num_samples, hop, n_fft, frames_per_latent, rounding)
    return min(stft_frames, latent * frames_per_latent)


def framing_of(chunking: Mapping[str, Any]) -> dict[str, Any] | None:
    """The framing keys of a ``chunking`` entry, or None for a file from before them."""
    if not any(key in chunking for key in FRAMING_KEYS):
        return None
    framing = {key: chunking.get(key) for key in FRAMING_KEYS}
    if "latent_frame_rounding" not in chunking:
        framing["latent_frame_rounding"] = DEFAULT_ROUNDING
    return framing  # type: ignore[return-value]


def check_framing(chunking: Mapping[str, Any], latent_hop: int, name: str) -> None:
    """Raise `LincaeError` naming ``name`` unless the framing keys are absent or consistent."""
    framing = framing_of(chunking)
    if framing is None:
        return
    hop, n_fft, start = framing["stft_hop"], framing["n_fft"], framing["stft_start_sample"]
    rounding = framing["latent_frame_rounding"]
    valid = (
        all(isinstance(value, int) and not isinstance(value, bool) for value in (hop, n_fft, start))
        and rounding in LATENT_FRAME_ROUNDINGS
        and start == 0
        and 0 < hop <= n_fft
        and latent_hop % hop == 0
    )
    if not valid:
        raise LincaeError(
            f"{name}: corrupt .lat file (framing stft_start_sample={start!r}, stft_hop={hop!r}, "
            f"n_fft={n_fft!r}, latent_frame_rounding={rounding!r} with latent_hop_samples "
            f"{latent_hop})"
        )


def expected_frames(chunking: Mapping[str, Any], model_rate_samples: int, latent_hop: int) -> int:
    """The latent frames of a file of ``model_rate_samples`` with this ``chunking`` entry."""
    framing = framing_of(chunking)
    if framing is None:
        return -(-model_rate_samples // latent_hop)
    hop = framing["stft_hop"]
    return latent_frames_for_samples(
        model_rate_samples,
        hop,
        framing["n_fft"],
        latent_hop // hop,
        framing["latent_frame_rounding"],
    )
