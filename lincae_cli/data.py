"""`LatentDataset`: crops of latent files for training loops, as a ``torch.utils.data.Dataset``.

The files come from a catalogue's ``manifest.jsonl`` (`lincae manifest`; nothing is opened
until an item is read) or from a folder of ``.lat`` / ``.npy`` files (headers read once, when
the dataset is made). Every audio channel of a file is its own sequence of latent frames. An
item reads only the bytes of its crop, one ``pread`` per latent channel, from a file opened in
the worker that reads it, so the dataset works with ``DataLoader(num_workers > 0)`` whatever
the start method. Random crops are drawn from ``(seed, epoch, index)``: the same in any worker.
(Crops are read rather than memory-mapped: a mapping would fault in a whole page per latent
channel, and network file systems map files poorly.)
"""

from __future__ import annotations

import bisect
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lincae_cli.batch.manifest import MANIFEST_NAME, read_lines
from lincae_cli.errors import LincaeError
from lincae_cli.latents.container import STORED_DTYPES, read_at, read_header
from lincae_cli.latents.latfile import FORMAT_NAME, TENSOR_NAME
from lincae_cli.paths import LAT_SUFFIX

LATENT_SUFFIXES = (LAT_SUFFIX, ".npy")
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_OPEN_FILES = 64  # per worker: enough for a shuffled stream, few enough for any ulimit


@dataclass(frozen=True)
class LatentSource:
    """One file: where it is, what it encodes (``source``), its channels and latent frames."""

    path: Path
    source: str
    channels: int
    frames: int


@dataclass(frozen=True)
class _Layout:
    """Where a file's tensor ``[channels, latent_channels, frames]`` lies (C order)."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, int, int]


class LatentDataset(Dataset):  # type: ignore[type-arg]
    """Crops of ``crop_frames`` latent frames, one audio channel at a time.

    ``source``: a ``manifest.jsonl``, a folder holding one, a folder of ``.lat`` / ``.npy``
    files (searched recursively, hidden ones skipped), or a list of such files. A ``.npy``
    holds ``[channels, latent_channels, frames]`` or ``[latent_channels, frames]``.

    ``mode="random"``: a file's channel with ``F`` frames gives ``F // crop_frames`` items
    (longer files are drawn more often), each a crop at a random start; call
    `set_epoch` to draw new starts. ``mode="sequential"``: every crop at starts ``0, hop,
    2*hop, ...`` (``hop_frames``, default ``crop_frames``) that fits. Channels shorter than a
    crop are skipped, or zero-padded with ``pad=True`` (``valid_frames`` says how much is real).
    ``gain_db=(low, high)``: each item's latents are scaled by a gain drawn uniformly in
    decibels: the latent space is linear, so this is the gain of the audio.

    An item is a dict: ``latents`` (float32 ``[latent_channels, crop_frames]``), ``source``
    (the encoded input, or the file), ``path``, ``channel``, ``start_frame``,
    ``valid_frames`` and ``gain_db``.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        crop_frames: int,
        *,
        mode: Literal["random", "sequential"] = "random",
        hop_frames: int | None = None,
        gain_db: tuple[float, float] | None = None,
        pad: bool = False,
        seed: int = 0,
    ) -> None:
        if crop_frames < 1:
            raise LincaeError(f"crop_frames must be at least 1, got {crop_frames}")
        if mode not in ("random", "sequential"):
            raise LincaeError(f"mode must be 'random' or 'sequential', not {mode!r}")
        if hop_frames is not None and hop_frames < 1:
            raise LincaeError(f"hop_frames must be at least 1, got {hop_frames}")
        if gain_db is not None and not (
            math.isfinite(gain_db[0]) and math.isfinite(gain_db[1]) and gain_db[0] <= gain_db[1]
        ):
            raise LincaeError(f"gain_db must be (low, high) with low <= high, got {gain_db}")
        self.crop_frames, self.mode, self.pad, self.seed = crop_frames, mode, pad, seed
        self.hop_frames = hop_frames or crop_frames
        self.gain_db = gain_db
        self.epoch = 0
        self.sources = find_sources(source)
        # Sequences (file, channel) that give items, and the first item of each.
        self._sequences: list[tuple[int, int]] = []
        self._first_item: list[int] = []
        total = 0
        for number, file in enumerate(self.sources):
            count = self._items_in(file.frames)
            for channel in range(file.channels if count else 0):
                self._sequences.append((number, channel))
                self._first_item.append(total)
                total += count
        self._length = total
        self._layouts: dict[Path, _Layout] = {}
        self._open: OrderedDict[Path, BinaryIO] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Draw other random crops and gains (the same for the same epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} items")
        sequence = bisect.bisect_right(self._first_item, index) - 1
        number, channel = self._sequences[sequence]
        file = self.sources[number]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        last_start = max(file.frames - self.crop_frames, 0)
        if self.mode == "random":
            start = int(rng.integers(0, last_start + 1))
        else:
            start = (index - self._first_item[sequence]) * self.hop_frames
        valid = min(self.crop_frames, file.frames - start)
        latents = self._read_crop(file, channel, start, valid)
        if valid < self.crop_frames:
            latents = np.pad(latents, ((0, 0), (0, self.crop_frames - valid)))
        gain_db = float(rng.uniform(*self.gain_db)) if self.gain_db else 0.0
        if gain_db:
            latents = latents * np.float32(10.0 ** (gain_db / 20.0))
        return {
            "latents": torch.from_numpy(np.array(latents, dtype=np.float32)),  # a writable copy
            "source": file.source,
            "path": str(file.path),
            "channel": channel,
            "start_frame": start,
            "valid_frames": valid,
            "gain_db": gain_db,
        }

    def _items_in(self, frames: int) -> int:
        if frames < self.crop_frames:
            return 1 if self.pad and frames > 0 else 0
        if self.mode == "random":
            return frames // self.crop_frames
        return (frames - self.crop_frames) // self.hop_frames + 1

    # -- reading ------------------------------------------------------------------------------

    def _read_crop(self, file: LatentSource, channel: int, start: int, frames: int) -> np.ndarray:
        """Latents ``[latent_channels, frames]`` of ``channel`` from ``start`` on, as stored."""
        handle, layout = self._file(file)
        _, latent_channels, total = layout.shape
        size = layout.dtype.itemsize
        row_bytes = frames * size
        first_row = channel * latent_channels
        if frames == total:  # whole rows: one read
            positions = [(layout.offset + first_row * total * size, latent_channels * row_bytes)]
        else:
            positions = [
                (layout.offset + ((first_row + row) * total + start) * size, row_bytes)
                for row in range(latent_channels)
            ]
        data = b"".join(read_at(handle, position, length) for position, length in positions)
        if len(data) != latent_channels * row_bytes:
            raise LincaeError(f"{file.path}: truncated latent file (changed since indexed?)")
        return np.frombuffer(data, dtype=layout.dtype).reshape(latent_channels, frames)

    def _file(self, file: LatentSource) -> tuple[BinaryIO, _Layout]:
        if self._pid != os.getpid():  # a forked worker: its own handles, never the parent's
            self._open, self._pid = OrderedDict(), os.getpid()
        handle = self._open.get(file.path)
        if handle is None:
            try:
                handle = open(file.path, "rb", buffering=0)  # kept open (least recently used)
            except OSError as error:
                raise LincaeError(f"{file.path}: cannot read ({error.strerror})") from None
            self._open[file.path] = handle
            if len(self._open) > _OPEN_FILES:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(file.path)
        layout = self._layouts.get(file.path)
        if layout is None:
            layout = self._layouts[file.path] = read_layout(file.path, handle)
            if layout.shape[0] != file.channels or layout.shape[2] != file.frames:
                raise LincaeError(
                    f"{file.path}: holds {layout.shape[0]} channel(s) x {layout.shape[2]} frames, "
                    f"the manifest says {file.channels} x {file.frames} (rewritten since?)"
                )
        return handle, layout  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # file handles stay in the process that opened them
        return state


# -- what files there are ---------------------------------------------------------------------


def find_sources(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[LatentSource]:
    """The files of ``source`` (see `LatentDataset`), from the manifest or their headers."""
    if not isinstance(source, str | os.PathLike):
        return [_from_header(Path(path)) for path in source]
    path = Path(source)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        path = path / MANIFEST_NAME
    if path.is_file() and path.suffix == ".jsonl":
        lines, _ = read_lines(path)  # a torn last line is skipped
        return [
            LatentSource(
                path.parent / line["output"], line["input"], line["channels"], line["frames"]
            )
            for line in lines
            if line["status"] == "ok"
        ]
    if path.is_dir():
        files = sorted(
            file
            for file in path.rglob("*")
            if file.suffix.lower() in LATENT_SUFFIXES
            and not any(part.startswith(".") for part in file.relative_to(path).parts)
        )
        return [_from_header(file) for file in files]
    if path.is_file():
        return [_from_header(path)]
    raise LincaeError(f"{path}: no such file or folder")


def _from_header(path: Path) -> LatentSource:
    try:
        with open(path, "rb") as handle:
            channels, _, frames = read_layout(path, handle).shape
    except OSError as error:
        raise LincaeError(f"{path}: cannot read ({error.strerror})") from None
    return LatentSource(path, str(path), channels, frames)


def read_layout(path: Path, handle: BinaryIO) -> _Layout:
    """Where the latents of a ``.lat`` or ``.npy`` file lie, from its header (checked)."""
    size = os.fstat(handle.fileno()).st_size
    if path.suffix.lower() == ".npy":
        layout = _npy_layout(path, handle)
    else:
        layout = _lat_layout(path, handle)
    if layout.offset + math.prod(layout.shape) * layout.dtype.itemsize > size:
        raise LincaeError(f"{path}: truncated latent file")
    return layout


def _lat_layout(path: Path, handle: BinaryIO) -> _Layout:
    name = str(path)
    header, data_start = read_header(handle, name)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise LincaeError(f"{name}: not a .lat file (safetensors without lincae-latent metadata)")
    entry = header.get(TENSOR_NAME)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    dtype = STORED_DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if dtype is None or not _ints(shape, 3) or not _ints(offsets, 2):
        raise LincaeError(f"{name}: corrupt .lat file (bad {TENSOR_NAME} entry)")
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise LincaeError(f"{name}: corrupt .lat file (data size does not match shape {shape})")
    return _Layout(data_start + offsets[0], dtype, tuple(shape))  # type: ignore[arg-type]


def _npy_layout(path: Path, handle: BinaryIO) -> _Layout:
    try:
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"format version {version}")
        shape, fortran_order, dtype = read_header(handle)
    except (ValueError, OSError, SyntaxError) as error:
        raise LincaeError(f"{path}: not a .npy file ({error})") from None
    if fortran_order or dtype.kind != "f" or len(shape) not in (2, 3):
        raise LincaeError(
            f"{path}: .npy latents must be C-ordered floats [channels, latent_channels, frames] "
            f"or [latent_channels, frames], got {dtype} {shape}"
        )
    return _Layout(handle.tell(), dtype, tuple(shape) if len(shape) == 3 else (1, *shape))


def _ints(value: object, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )
