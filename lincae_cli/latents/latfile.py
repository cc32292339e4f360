"""The `.lat` latent file, format v1: read, write and validate.

A `.lat` file is a safetensors file (no pickle) with one tensor, ``latents``, shaped
``[channels, latent_channels, frames]``, and three string metadata entries: ``format``
(``"lincae-latent"``), ``format_version`` (``"MAJOR.MINOR"``) and ``lincae`` (a JSON document
with everything needed to decode and to combine files). The full specification, which this
module must match, is docs/lat-format.md.

The reader parses the safetensors container itself (latents/container.py) rather than through
the safetensors library, so that a bad file always ends in a `LincaeError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import safetensors.torch
import torch

from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.audio.io import resampled_length
from lincae_cli.errors import LincaeError
from lincae_cli.latents.container import STORED_DTYPES, read_tensor, split_container
from lincae_cli.latents.framing import check_framing, expected_frames
from lincae_cli.paths import input_name, is_stdio, output_name
from lincae_cli.version import __version__

FORMAT_NAME = "lincae-latent"
FORMAT_VERSION = "1.0"
FORMAT_MAJOR = 1
META_KEY = "lincae"
TENSOR_NAME = "latents"

# dtype names accepted by `write_lat`: those of the container's stored dtypes.
LAT_DTYPES: dict[str, torch.dtype] = {
    dtype.name: getattr(torch, dtype.name) for dtype in STORED_DTYPES.values()
}
_FLOAT16_MAX = float(torch.finfo(torch.float16).max)
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_VERSION_PATTERN = re.compile(r"(\d+)\.(\d+)")
# Sanity bound on source_sample_rate / model_sample_rate (either way): decoding resamples the
# model-rate audio to the source rate, so a corrupt rate could turn a few frames into gigabytes.
MAX_RATE_RATIO = 256

PathOrStream = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class LatentMeta:
    """Everything a `.lat` file says about its latents (the JSON document under ``lincae``).

    ``latent_hop_samples`` counts samples at ``model_sample_rate``: frame ``k`` covers the
    source, resampled to the model rate, from sample ``k * latent_hop_samples`` on.
    ``num_samples`` is the original length at ``source_sample_rate``; it fixes the number of
    frames (`expected_frames`).
    """

    model_name: str
    model_sha256: str
    scale_factor: float
    model_sample_rate: int
    source_sample_rate: int
    num_samples: int
    channels: int
    latent_rate_hz: float
    latent_hop_samples: int
    chunking: dict[str, Any] = field(default_factory=dict)
    source_loudness_lufs: float | None = None
    loudness_is_estimate: bool = False
    provenance: list[dict[str, Any]] = field(default_factory=list)
    lincae_version: str = __version__
    format_version: str = FORMAT_VERSION

    @property
    def duration_seconds(self) -> float:
        """Length of the original audio in seconds."""
        return self.num_samples / self.source_sample_rate

    @property
    def model_rate_samples(self) -> int:
        """Length of the audio resampled to ``model_sample_rate`` (rounded half up, as soxr)."""
        return resampled_length(self.num_samples, self.source_sample_rate, self.model_sample_rate)

    @property
    def expected_frames(self) -> int:
        """Frames the latents must have (the rule: latents/framing.py)."""
        return expected_frames(self.chunking, self.model_rate_samples, self.latent_hop_samples)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document stored under the ``lincae`` metadata key."""
        document = dataclasses.asdict(self)
        document["format"] = FORMAT_NAME
        return document


@dataclass(frozen=True)
class LatentFile:
    """Latents and their metadata.

    ``latents`` is a float32 tensor ``[channels, latent_channels, frames]``; all arithmetic on
    it happens in float32 whatever dtype the file stores.
    """

    latents: torch.Tensor
    meta: LatentMeta

    @property
    def channels(self) -> int:
        return int(self.latents.shape[0])

    @property
    def latent_channels(self) -> int:
        return int(self.latents.shape[1])

    @property
    def frames(self) -> int:
        return int(self.latents.shape[2])


def provenance_entry(op: str, **fields: Any) -> dict[str, Any]:
    """One provenance record: ``{"op": op, **fields, "lincae_version": ..., "time": ...}``.

    ``time`` is UTC, ISO 8601, to the second. ``fields`` must be JSON-serialisable.
    """
    entry: dict[str, Any] = {"op": op}
    entry.update(fields)
    entry["lincae_version"] = __version__
    entry["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return entry


def validate_latent_file(lat: LatentFile, name: str) -> None:
    """Check that the tensor and the metadata agree; raise `LincaeError` naming ``name`` if not."""
    latents = lat.latents
    if not isinstance(latents, torch.Tensor) or latents.ndim != 3:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
        raise LincaeError(
            f"{name}: latents must be shaped [channels, latent_channels, frames], got {shape}"
        )
    if not latents.is_floating_point():
        raise LincaeError(f"{name}: latents must be floating point, got {latents.dtype}")
    if min(latents.shape) < 1:
        raise LincaeError(f"{name}: latents have an empty dimension, shape {tuple(latents.shape)}")
    if not bool(torch.isfinite(latents).all()):
        raise LincaeError(f"{name}: latents contain NaN or Inf values")
    meta = lat.meta
    _validate_meta(meta, name)
    if meta.channels != lat.channels:
        raise LincaeError(
            f"{name}: metadata says {meta.channels} channel(s) but the latents hold {lat.channels}"
        )
    if lat.frames != meta.expected_frames:
        raise LincaeError(
            f"{name}: header says {meta.duration_seconds:.3f} s ({meta.num_samples} samples at "
            f"{meta.source_sample_rate} Hz), which is {meta.expected_frames} latent frame(s), "
            f"but the latents hold {lat.frames} ({lat.frames / meta.latent_rate_hz:.3f} s)"
        )


def check_dtype(dtype: str) -> None:
    """Reject a storage dtype (``--dtype``) that .lat files cannot hold."""
    if dtype not in LAT_DTYPES:
        raise LincaeError(f"--dtype must be {' or '.join(LAT_DTYPES)}, not {dtype!r}")


def lat_to_bytes(lat: LatentFile, dtype: str = "float16", name: str = "<bytes>") -> bytes:
    """Serialise ``lat`` to `.lat` v1 bytes, storing the latents as ``dtype``.

    The metadata is stamped with the current format version and lincae version. Raises
    `LincaeError` if the file is inconsistent or its values overflow float16.
    """
    if dtype not in LAT_DTYPES:
        raise LincaeError(
            f"{name}: unknown latent dtype {dtype!r}; choose one of {list(LAT_DTYPES)}"
        )
    validate_latent_file(lat, name)
    stored = lat.latents.detach().to(device="cpu", dtype=torch.float32)
    if dtype == "float16":
        peak = float(stored.abs().max())
        if peak > _FLOAT16_MAX:
            raise LincaeError(
                f"{name}: latent values up to {peak:.3g} overflow float16; write with float32"
            )
    meta = dataclasses.replace(lat.meta, lincae_version=__version__, format_version=FORMAT_VERSION)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        META_KEY: json.dumps(meta.to_json_dict(), allow_nan=False),
    }
    tensors = {TENSOR_NAME: stored.to(LAT_DTYPES[dtype]).contiguous()}
    return safetensors.torch.save(tensors, metadata=metadata)


def lat_from_bytes(data: bytes, name: str = "<bytes>") -> LatentFile:
    """Parse and validate `.lat` bytes; latents come back as float32.

    Any problem with the bytes (not a safetensors file, not ours, another major version,
    truncated, corrupt, inconsistent) raises `LincaeError` whose message starts with ``name``.
    """
    header, buffer = split_container(data, name)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise LincaeError(f"{name}: not a .lat file (safetensors without lincae-latent metadata)")
    if not all(isinstance(value, str) for value in metadata.values()):
        raise LincaeError(f"{name}: corrupt .lat file (non-string metadata)")
    format_version = _check_format_version(metadata.get("format_version"), name)
    document = _parse_document(metadata.get(META_KEY), name)
    if document.get("format") != FORMAT_NAME or document.get("format_version") != format_version:
        raise LincaeError(f"{name}: corrupt .lat file (format fields disagree)")
    meta = _meta_from_document(document, name)
    latents = torch.from_numpy(read_tensor(header, TENSOR_NAME, buffer, name))
    lat = LatentFile(latents=latents, meta=meta)
    validate_latent_file(lat, name)
    return lat


def write_lat(target: PathOrStream, lat: LatentFile, dtype: str = "float16") -> None:
    """Write ``lat`` to a path (atomically), to ``"-"`` (stdout) or to a binary stream.

    A path is written through a temporary file in the same directory, fsynced, then renamed
    over the target, so readers see either the old file or the complete new one.
    """
    name = _display_name(target, output_name)
    data = lat_to_bytes(lat, dtype=dtype, name=name)
    if isinstance(target, str | os.PathLike):
        if is_stdio(target):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            atomic_write_bytes(Path(target), data)
    else:
        target.write(data)
        target.flush()


def read_lat(source: PathOrStream) -> LatentFile:
    """Read and validate a `.lat` file from a path, ``"-"`` (stdin) or a binary stream."""
    name = _display_name(source, input_name)
    if isinstance(source, str | os.PathLike):
        if is_stdio(source):
            data = sys.stdin.buffer.read()
        else:
            data = read_lat_bytes(Path(source))
    else:
        data = source.read()
    if not data:
        raise LincaeError(f"{name}: not a .lat file (empty)")
    return lat_from_bytes(data, name=name)


def _display_name(target: PathOrStream, path_name: Callable[[str | os.PathLike[str]], str]) -> str:
    if isinstance(target, str | os.PathLike):
        return path_name(target)
    return str(getattr(target, "name", "<stream>"))


def read_lat_bytes(path: Path) -> bytes:
    """The bytes of a .lat file, or a LincaeError naming it (missing, a folder, unreadable)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LincaeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LincaeError(f"{path}: is a directory, not a .lat file") from None
    except OSError as error:
        raise LincaeError(f"{path}: cannot read ({error.strerror or error})") from None


def _check_format_version(value: object, name: str) -> str:
    match = _VERSION_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise LincaeError(f"{name}: corrupt .lat file (bad format_version {value!r})")
    if int(match.group(1)) != FORMAT_MAJOR:
        raise LincaeError(
            f"{name}: .lat format version {value} is not supported "
            f"(this lincae {__version__} reads version {FORMAT_MAJOR}.x)"
        )
    return value  # type: ignore[return-value]


def _parse_document(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, str):
        raise LincaeError(f"{name}: corrupt .lat file (missing {META_KEY!r} metadata)")
    try:
        document = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise LincaeError(f"{name}: corrupt .lat file (unreadable {META_KEY!r} metadata)") from None
    if not isinstance(document, dict):
        raise LincaeError(f"{name}: corrupt .lat file ({META_KEY!r} metadata is not an object)")
    return document


def _reject_constant(token: str) -> None:
    """JSON's NaN and Infinity extensions are not JSON; the spec forbids them."""
    raise ValueError(f"{token} is not allowed")


def _meta_from_document(document: dict[str, Any], name: str) -> LatentMeta:
    """Build `LatentMeta` from the JSON document, checking every field's type.

    Keys unknown to this version are ignored: minor versions may add them.
    """

    def get(key: str, kind: str) -> Any:
        if key not in document:
            raise LincaeError(f"{name}: corrupt .lat file (metadata lacks {key!r})")
        value = document[key]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "dict": isinstance(value, dict),
            "list": isinstance(value, list),
            "float|None": value is None
            or (isinstance(value, int | float) and not isinstance(value, bool)),
        }[kind]
        if not ok:
            raise LincaeError(
                f"{name}: corrupt .lat file (metadata {key!r} should be {kind}, got {value!r})"
            )
        if kind == "float":
            try:
                return float(value)
            except OverflowError:
                raise LincaeError(
                    f"{name}: corrupt .lat file (metadata {key!r} too large)"
                ) from None
        return value

    provenance = get("provenance", "list")
    if not all(isinstance(entry, dict) for entry in provenance):
        raise LincaeError(f"{name}: corrupt .lat file (provenance entries must be objects)")
    loudness = get("source_loudness_lufs", "float|None")
    return LatentMeta(
        model_name=get("model_name", "str"),
        model_sha256=get("model_sha256", "str"),
        scale_factor=get("scale_factor", "float"),
        model_sample_rate=get("model_sample_rate", "int"),
        source_sample_rate=get("source_sample_rate", "int"),
        num_samples=get("num_samples", "int"),
        channels=get("channels", "int"),
        latent_rate_hz=get("latent_rate_hz", "float"),
        latent_hop_samples=get("latent_hop_samples", "int"),
        chunking=get("chunking", "dict"),
        source_loudness_lufs=None if loudness is None else get("source_loudness_lufs", "float"),
        loudness_is_estimate=get("loudness_is_estimate", "bool"),
        provenance=provenance,
        lincae_version=get("lincae_version", "str"),
        format_version=get("format_version", "str"),
    )


def _validate_meta(meta: LatentMeta, name: str) -> None:
    """Value checks (types are checked on parse); raise `LincaeError` naming ``name``."""
    if not _SHA256_PATTERN.fullmatch(meta.model_sha256):
        raise LincaeError(f"{name}: model_sha256 must be 64 lowercase hex digits")
    check_framing(meta.chunking, meta.latent_hop_samples, name)
    positive_ints = {
        "model_sample_rate": meta.model_sample_rate,
        "source_sample_rate": meta.source_sample_rate,
        "num_samples": meta.num_samples,
        "channels": meta.channels,
        "latent_hop_samples": meta.latent_hop_samples,
    }
    for key, value in positive_ints.items():
        if value < 1:
            raise LincaeError(f"{name}: metadata {key} must be positive, got {value}")
    ratio = meta.source_sample_rate / meta.model_sample_rate
    if not 1 / MAX_RATE_RATIO <= ratio <= MAX_RATE_RATIO:
        raise LincaeError(
            f"{name}: source_sample_rate {meta.source_sample_rate} Hz is implausible for "
            f"model_sample_rate {meta.model_sample_rate} Hz (more than {MAX_RATE_RATIO}x apart)"
        )
    finite_positive = {"scale_factor": meta.scale_factor, "latent_rate_hz": meta.latent_rate_hz}
    for key, value in finite_positive.items():
        if not (math.isfinite(value) and value > 0):
            raise LincaeError(f"{name}: metadata {key} must be finite and positive, got {value}")
    expected_rate_hz = meta.model_sample_rate / meta.latent_hop_samples
    if not math.isclose(meta.latent_rate_hz, expected_rate_hz, rel_tol=1e-6):
        raise LincaeError(
            f"{name}: latent_rate_hz {meta.latent_rate_hz} disagrees with model_sample_rate / "
            f"latent_hop_samples = {expected_rate_hz}"
        )
    loudness = meta.source_loudness_lufs
    if loudness is not None and not math.isfinite(loudness):
        raise LincaeError(f"{name}: source_loudness_lufs must be finite or null, got {loudness}")
