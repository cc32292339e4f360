"""How latent frames sit in time, and how many a length of audio has: the one frame-count rule.

Since lincae took the reference packages' framing, a `.lat` file's ``chunking`` entry records
it: ``stft_start_sample`` 0 (STFT frame ``i`` covers model-rate samples ``[i·stft_hop,
i·stft_hop + n_fft)``, latent frame ``k`` the STFT frames ``[k·2^d, (k+1)·2^d)``, ``2^d =
latent_hop_samples / stft_hop``), ``stft_hop`` and ``n_fft``. ``N`` model-rate samples then have
``ceil(F / 2^d)`` latent frames, ``F = max(1, (N - n_fft) // stft_hop + 1)`` (shorter audio is
padded to one STFT frame). Files written before record none of these keys: their STFT frames
were centred on ``i·stft_hop + stft_hop/2`` (frame 0 started ``(n_fft - stft_hop) / 2`` samples
before the audio) and they have ``ceil(N / latent_hop_samples)`` frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lincae_cli.errors import LincaeError

FRAMING_KEYS = ("stft_start_sample", "stft_hop", "n_fft")


def stft_frames_for_samples(num_samples: int, hop: int, n_fft: int) -> int:
    """Whole STFT frames in ``num_samples`` samples, at least one (shorter audio is padded)."""
    return max(1, (num_samples - n_fft) // hop + 1)


def latent_frames_for_samples(
    num_samples: int, hop: int, n_fft: int, frames_per_latent: int
) -> int:
    """Latent frames of ``num_samples`` model-rate samples: ``ceil(F / 2^d)`` of the STFT
    frames ``F``, as the encoder's strided convolutions round."""
    return -(-stft_frames_for_samples(num_samples, hop, n_fft) // frames_per_latent)


def framing_of(chunking: Mapping[str, Any]) -> dict[str, int] | None:
    """The framing keys of a ``chunking`` entry, or None for a file from before them."""
    if not any(key in chunking for key in FRAMING_KEYS):
        return None
    return {key: chunking.get(key) for key in FRAMING_KEYS}  # type: ignore[misc]


def check_framing(chunking: Mapping[str, Any], latent_hop: int, name: str) -> None:
    """Raise `LincaeError` naming ``name`` unless the framing keys are absent or consistent."""
    framing = framing_of(chunking)
    if framing is None:
        return
    hop, n_fft, start = framing["stft_hop"], framing["n_fft"], framing["stft_start_sample"]
    valid = (
        all(isinstance(value, int) and not isinstance(value, bool) for value in framing.values())
        and start == 0
        and 0 < hop <= n_fft
        and latent_hop % hop == 0
    )
    if not valid:
        raise LincaeError(
            f"{name}: corrupt .lat file (framing stft_start_sample={start!r}, stft_hop={hop!r}, "
            f"n_fft={n_fft!r} with latent_hop_samples {latent_hop})"
        )


def expected_frames(chunking: Mapping[str, Any], model_rate_samples: int, latent_hop: int) -> int:
    """The latent frames of a file of ``model_rate_samples`` with this ``chunking`` entry."""
    framing = framing_of(chunking)
    if framing is None:
        return -(-model_rate_samples // latent_hop)
    hop = framing["stft_hop"]
    return latent_frames_for_samples(model_rate_samples, hop, framing["n_fft"], latent_hop // hop)
