"""Sample counts across sample rates: integer arithmetic only, so that the latent layer can use
it without importing the audio libraries (soundfile, soxr)."""

from __future__ import annotations


def resampled_length(num_samples: int, sample_rate_in: int, sample_rate_out: int) -> int:
    """Length after resampling: ``num_samples * out / in`` rounded half up (as soxr does)."""
    return (2 * num_samples * sample_rate_out + sample_rate_in) // (2 * sample_rate_in)
