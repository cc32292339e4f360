"""The safetensors container of a `.lat` file, read strictly: every byte of an untrusted file is
checked here, so that a bad file ends in a `LincaeError` naming it, never in a parser exception
or a Rust panic. NumPy only (the layout: docs/lat-format.md)."""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, BinaryIO

import numpy as np

from lincae_cli.errors import LincaeError

# The safetensors dtype codes a .lat may store its latents in.
STORED_DTYPES: dict[str, np.dtype] = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 16 * 1024 * 1024  # a .lat header is a few kB; anything larger is not one


def split_container(data: bytes, name: str) -> tuple[dict[str, Any], memoryview]:
    """Split safetensors bytes into (header dict, tensor byte buffer)."""
    if len(data) < _HEADER_LENGTH_BYTES + 2:
        raise LincaeError(f"{name}: not a .lat file (too short to be safetensors)")
    (header_length,) = struct.unpack("<Q", data[:_HEADER_LENGTH_BYTES])
    header_end = _HEADER_LENGTH_BYTES + header_length
    if data[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + 1] != b"{":
        raise LincaeError(f"{name}: not a .lat file (no safetensors header)")
    if header_end > len(data):
        raise LincaeError(f"{name}: truncated or corrupt .lat file (header runs past the end)")
    try:
        header = json.loads(data[_HEADER_LENGTH_BYTES:header_end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LincaeError(f"{name}: corrupt .lat file (unreadable header)") from None
    if not isinstance(header, dict):
        raise LincaeError(f"{name}: corrupt .lat file (header is not an object)")
    return header, memoryview(data)[header_end:]


def read_at(handle: BinaryIO, position: int, length: int) -> bytes:
    """Up to ``length`` bytes from ``position``: a positioned read where the OS has one (safe
    on a handle shared between threads), else seek and read."""
    if hasattr(os, "pread"):
        return os.pread(handle.fileno(), length, position)
    handle.seek(position)
    return handle.read(length)


def read_header(file: str | os.PathLike[str] | BinaryIO, name: str) -> tuple[dict[str, Any], int]:
    """The header of a .lat file (a path, or an open binary file read with positioned reads,
    safe to share between threads) and where its tensor data starts, reading only the header's
    bytes, checked as `split_container` checks them."""
    if not hasattr(file, "fileno"):
        try:
            with open(file, "rb") as handle:  # type: ignore[arg-type]
                return read_header(handle, name)
        except OSError as error:
            raise LincaeError(f"{name}: cannot read ({error.strerror or error})") from None
    prefix = read_at(file, 0, _HEADER_LENGTH_BYTES)  # type: ignore[arg-type]
    if len(prefix) == _HEADER_LENGTH_BYTES:
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise LincaeError(f"{name}: not a .lat file (header of {length} bytes)")
        prefix += read_at(file, _HEADER_LENGTH_BYTES, length)  # type: ignore[arg-type]
    header, _ = split_container(prefix, name)
    return header, len(prefix)


def read_tensor(
    header: dict[str, Any], tensor_name: str, buffer: memoryview, name: str
) -> np.ndarray:
    """The 3-D tensor ``tensor_name`` of a split container, as float32."""
    entry = header.get(tensor_name)
    if not isinstance(entry, dict):
        raise LincaeError(f"{name}: corrupt .lat file (no {tensor_name!r} tensor)")
    dtype = STORED_DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise LincaeError(
            f"{name}: corrupt .lat file ({tensor_name} dtype {entry.get('dtype')!r}, "
            f"expected one of {list(STORED_DTYPES)})"
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (_is_int_list(shape) and len(shape) == 3 and min(shape) >= 0):
        raise LincaeError(f"{name}: corrupt .lat file ({tensor_name} shape {shape!r} is not 3-D)")
    if not (_is_int_list(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
        raise LincaeError(f"{name}: corrupt .lat file (bad data offsets {offsets!r})")
    begin, end = offsets
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise LincaeError(f"{name}: corrupt .lat file (data size does not match shape {shape})")
    if end > len(buffer):
        raise LincaeError(
            f"{name}: truncated .lat file ({len(buffer)} of {end} latent data bytes present)"
        )
    values = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
    return values.astype(np.float32)


def _is_int_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )
