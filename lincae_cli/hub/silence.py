"""Each model's silence latent ``b`` (nn/autoencoder.py, `silence_latent`), kept per model.

A model file may record ``b`` (written by `lincae train`'s export and by conversion); for one
that does not (the shipped v1 files, whose bytes are their identity), ``b`` is computed once
and kept in ``<lincae cache>/silence/<weights sha256>.json``, so that encoding does not pay
for it on every run.
"""

from __future__ import annotations

import json
import math

from lincae_cli.hub.cache import atomic_write_bytes, lincae_cache_dir
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder


def silence_latent_of(model: ConsistencyAutoencoder, sha256: str) -> list[float]:
    """``b`` of ``model`` (weights hash ``sha256``): recorded, cached, or computed now."""
    if model.silence_latent_values is None:
        model.silence_latent_values = _cached(sha256, model.config.latent_channels)
    if model.silence_latent_values is None:
        values = model.silence_latent().tolist()
        try:
            path = lincae_cache_dir() / "silence" / f"{sha256}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(values).encode())
        except OSError:
            pass  # a read-only cache only costs the computation next time
    return list(model.silence_latent_values or model.silence_latent().tolist())


def _cached(sha256: str, channels: int) -> list[float] | None:
    try:
        values = json.loads((lincae_cache_dir() / "silence" / f"{sha256}.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(values, list) and len(values) == channels
    if not ok or not all(isinstance(v, float | int) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]
