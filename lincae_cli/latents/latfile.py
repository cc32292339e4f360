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
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors.numpy

from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.errors import LincaeError
from lincae_cli.latents.container import STORED_DTYPES, read_tensor, split_container
from lincae_cli.latents.meta import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LatentMeta,
    meta_from_document,
    validate_meta,
)
from lincae_cli.latents.meta import MAX_RATE_RATIO as MAX_RATE_RATIO  # re-exported
from lincae_cli.latents.meta import provenance_entry as provenance_entry  # re-exported
from lincae_cli.paths import input_name, is_npy_path, is_stdio, output_name
from lincae_cli.version import __version__

FORMAT_MAJOR = 1
META_KEY = "lincae"
TENSOR_NAME = "latents"

# dtype names accepted by `write_lat`: those of the container's stored dtypes.
LAT_DTYPES: dict[str, np.dtype] = {dtype.name: dtype for dtype in STORED_DTYPES.values()}
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_VERSION_PATTERN = re.compile(r"(\d+)\.(\d+)")

PathOrStream = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class LatentFile:
    """Latents and their metadata.

    ``latents`` is a float32 NumPy array ``[channels, latent_channels, frames]``; all arithmetic
    on it happens in float32 whatever dtype the file stores. Reading, writing and the latent
    operations never import torch; the model's side converts with ``torch.from_numpy``.
    """

    latents: np.ndarray
    meta: LatentMeta

    def __post_init__(self) -> None:
        # Accept any array-like (a CPU torch tensor included) and hold float32 NumPy.
        latents = np.asarray(self.latents)
        if np.issubdtype(latents.dtype, np.floating) and latents.dtype != np.float32:
            latents = latents.astype(np.float32)
        object.__setattr__(self, "latents", latents)

    @property
    def channels(self) -> int:
        return int(self.latents.shape[0])

    @property
    def latent_channels(self) -> int:
        return int(self.latents.shape[1])

    @property
    def frames(self) -> int:
        return int(self.latents.shape[2])


def validate_latent_file(lat: LatentFile, name: str) -> None:
    """Check that the tensor and the metadata agree; raise `LincaeError` naming ``name`` if not."""
    latents = lat.latents
    if not isinstance(latents, np.ndarray) or latents.ndim != 3:
        shape = tuple(latents.shape) if isinstance(latents, np.ndarray) else type(latents)
        raise LincaeError(
            f"{name}: latents must be shaped [channels, latent_channels, frames], got {shape}"
        )
    if not np.issubdtype(latents.dtype, np.floating):
        raise LincaeError(f"{name}: latents must be floating point, got {latents.dtype}")
    if min(latents.shape) < 1:
        raise LincaeError(f"{name}: latents have an empty dimension, shape {tuple(latents.shape)}")
    if not bool(np.isfinite(latents).all()):
        raise LincaeError(f"{name}: latents contain NaN or Inf values")
    meta = lat.meta
    validate_meta(meta, name)
    if meta.silence_latent is not None and len(meta.silence_latent) != lat.latent_channels:
        raise LincaeError(
            f"{name}: silence_latent has {len(meta.silence_latent)} values for "
            f"{lat.latent_channels} latent channels"
        )
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
    stored, document = storable(lat, dtype, name)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        META_KEY: json.dumps(document, allow_nan=False),
    }
    return safetensors.numpy.save({TENSOR_NAME: stored}, metadata=metadata)


def storable(lat: LatentFile, dtype: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """What a file stores of ``lat``: the latents as ``dtype`` (C order) and the ``lincae``
    JSON document, stamped with the current format and lincae versions. Shared by the `.lat`
    container and the `.npy` + sidecar pair (latents/npy.py)."""
    if dtype not in LAT_DTYPES:
        raise LincaeError(
            f"{name}: unknown latent dtype {dtype!r}; choose one of {list(LAT_DTYPES)}"
        )
    validate_latent_file(lat, name)
    stored = np.asarray(lat.latents, dtype=np.float32)
    if dtype == "float16":
        peak = float(np.abs(stored).max())
        if peak > _FLOAT16_MAX:
            raise LincaeError(
                f"{name}: latent values up to {peak:.3g} overflow float16; write with float32"
            )
    meta = dataclasses.replace(lat.meta, lincae_version=__version__, format_version=FORMAT_VERSION)
    return np.ascontiguousarray(stored.astype(LAT_DTYPES[dtype])), meta.to_json_dict()


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
    meta = meta_from_json(metadata.get(META_KEY), name, format_version)
    latents = read_tensor(header, TENSOR_NAME, buffer, name)
    lat = LatentFile(latents=latents, meta=meta)
    validate_latent_file(lat, name)
    return lat


def write_lat(target: PathOrStream, lat: LatentFile, dtype: str = "float16") -> None:
    """Write ``lat`` to a path (atomically), to ``"-"`` (stdout) or to a binary stream.

    A path is written through a temporary file in the same directory, fsynced, then renamed
    over the target, so readers see either the old file or the complete new one.
    """
    if isinstance(target, str | os.PathLike) and is_npy_path(target):
        from lincae_cli.latents.npy import write_npy

        write_npy(target, lat, dtype)  # a path ending in .npy: the array and its sidecar
        return
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
    if isinstance(source, str | os.PathLike) and is_npy_path(source):
        from lincae_cli.latents.npy import read_npy

        return read_npy(source)  # a path ending in .npy: the array and its sidecar
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


def meta_from_json(text: object, name: str, format_version: str | None = None) -> LatentMeta:
    """The ``lincae`` JSON document (text: a `.lat`'s metadata entry or a `.npy`'s sidecar) as
    `LatentMeta`; ``format_version`` is the container's, which the document must repeat."""
    document = _parse_document(text, name)
    if format_version is None:
        format_version = _check_format_version(document.get("format_version"), name)
    if document.get("format") != FORMAT_NAME or document.get("format_version") != format_version:
        raise LincaeError(f"{name}: corrupt .lat file (format fields disagree)")
    return meta_from_document(document, name)


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
