"""Ogg Opus through libsndfile, reproducibly: the training pack's codec (pack.py).

Opus codes at 48 kHz only: audio is resampled from 44.1 kHz with soxr (VHQ) before encoding and
back (HQ, as the trainer resamples) after decoding. libsndfile gives every Ogg stream a serial
number drawn from the clock, so two encodes of the same audio differ in 8 bytes per page;
`encode_opus` sets the serial from a name and recomputes the page checksums, so the bytes repeat.
"""

from __future__ import annotations

import hashlib
import io
import zlib

import numpy as np
import soundfile as sf
import soxr

from lincae_cli.errors import LincaeError

from .dataset_io import SAMPLE_RATE

OPUS_RATE = 48000


def compression_level(kbps: float) -> float:
    """libsndfile's Opus compression level for a mono bit rate: it maps 0..1 linearly to
    256..6 kbit/s (measured: 32 kbit/s asked gives 33 on music, containers included)."""
    if not 6 <= kbps <= 256:
        raise LincaeError(f"--kbps must be between 6 and 256, not {kbps}")
    return 1.0 - (kbps - 6.0) / 250.0


_BIT_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0,
    no final xor) of `page` with its checksum field zeroed, computed with zlib's reflected
    CRC-32 on bit-reversed bytes."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def with_ogg_serial(data: bytes, serial: int) -> bytes:
    """`data`, an Ogg stream, with every page's serial number set to `serial` and its checksum
    recomputed."""
    out = bytearray(data)
    position = 0
    while position < len(out):
        if out[position : position + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {position}")
        segments = out[position + 26]
        body = sum(out[position + 27 : position + 27 + segments])
        end = position + 27 + segments + body
        out[position + 14 : position + 18] = serial.to_bytes(4, "little")
        out[position + 22 : position + 26] = bytes(4)
        out[position + 22 : position + 26] = ogg_crc(bytes(out[position:end])).to_bytes(4, "little")
        position = end
    return bytes(out)


def encode_opus(audio: np.ndarray, kbps: float, name: str) -> bytes:
    """Mono float32 44.1 kHz `audio` as Ogg Opus bytes (resampled to 48 kHz with soxr VHQ);
    the stream serial number comes from `name`, so the bytes repeat."""
    resampled = soxr.resample(audio, SAMPLE_RATE, OPUS_RATE, quality="VHQ").astype(np.float32)
    buffer = io.BytesIO()
    sf.write(
        buffer,
        resampled,
        OPUS_RATE,
        format="OGG",
        subtype="OPUS",
        compression_level=compression_level(kbps),
    )
    serial = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return with_ogg_serial(buffer.getvalue(), serial)


def decode_opus(data: bytes) -> np.ndarray:
    """Ogg Opus bytes -> mono float32 at 44.1 kHz (soxr HQ, as the trainer resamples)."""
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
