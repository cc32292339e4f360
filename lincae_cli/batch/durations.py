"""How long each input is, read from file headers without decoding: what torchrun shares are
balanced by (engine/shard.py's `assign_shares`).

An audio file's header gives frames and rate (libsndfile opens it, about 30-60 us for WAV,
FLAC or MP3 on a local disk; docs/scale.md); a `.lat` file records its source's duration in
its metadata, read from the first few kilobytes. What cannot be read costs 0 here: it fails
fast later, with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lincae_cli.batch.inputs import InputFile
from lincae_cli.errors import LincaeError


def input_seconds(items: Sequence[InputFile]) -> list[float]:
    """Seconds of audio in each input: recorded duration for ``.lat`` files, the header's
    frames / rate for audio files, 0 for stdin and for what cannot be read."""
    return [_seconds(item) for item in items]


def _seconds(item: InputFile) -> float:
    if item.path is None:
        return 0.0
    try:
        if item.path.suffix.lower() == ".lat":
            return lat_recorded_seconds(item.path)
        return audio_header_seconds(item.path)
    except (LincaeError, OSError, RuntimeError, ValueError, KeyError, TypeError):
        # soundfile raises LibsndfileError (a RuntimeError) for what it cannot open.
        return 0.0


def audio_header_seconds(path: Path) -> float:
    """Duration of an audio file from its header (frames / sample rate)."""
    import soundfile

    with soundfile.SoundFile(path) as audio:
        return float(audio.frames) / max(float(audio.samplerate), 1.0)


def lat_recorded_seconds(path: Path) -> float:
    """Duration of the audio a ``.lat`` file encodes, from its metadata (docs/lat-format.md),
    reading the header only."""
    from lincae_cli.latents.container import read_header
    from lincae_cli.latents.latfile import META_KEY

    header, _ = read_header(path, str(path))
    document = json.loads(header["__metadata__"][META_KEY])
    return float(document["num_samples"]) / max(float(document["source_sample_rate"]), 1.0)
