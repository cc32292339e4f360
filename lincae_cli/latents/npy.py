"""Latents as a NumPy ``.npy`` array beside a JSON sidecar: the stable-audio-tools pre-encode
convention, for tools that read arrays (docs/lat-format.md, ".npy + sidecar").

``x.npy`` holds the latents ``[channels, latent_channels, frames]`` as float16 or float32
(NumPy's format, never pickled objects); ``x.json`` beside it holds the `.lat`'s ``lincae``
JSON document unchanged. The pair is a `.lat` file split in two, so converting either way is
lossless. A ``.npy`` without its sidecar is bare latents (`BareLatents`): only decoding takes
them, with the model and the sample rate given by the user, and their length is the span of
their frames. NumPy only: no torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lincae_cli.atomic import AtomicFile
from lincae_cli.audio.rates import resampled_length
from lincae_cli.errors import LincaeError, first_line
from lincae_cli.latents.framing import framing_of
from lincae_cli.latents.latfile import (
    LatentFile,
    LatentMeta,
    meta_from_json,
    provenance_entry,
    storable,
    validate_latent_file,
)

SIDECAR_SUFFIX = ".json"
_NPY_MAGIC = b"\x93NUMPY"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of ``x.npy``: ``x.json`` beside it."""
    return Path(path).with_suffix(SIDECAR_SUFFIX)


def write_npy(target: str | os.PathLike[str], lat: LatentFile, dtype: str = "float16") -> None:
    """Write the latents of ``lat`` to ``target`` (a ``.npy`` path) as ``dtype`` and its
    metadata to the sidecar, each atomically; the sidecar goes in place first, so that a new
    array is never read with an older sidecar."""
    path = Path(target)
    stored, document = storable(lat, dtype, str(path))
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if not path.parent.is_dir():
        raise LincaeError(f"{path}: directory {path.parent} does not exist")
    array_file, sidecar_file = AtomicFile(path), AtomicFile(sidecar_path(path))
    try:
        with open(array_file.temporary, "wb") as handle:
            np.save(handle, stored, allow_pickle=False)
        sidecar_file.temporary.write_text(text, encoding="utf-8")
        sidecar_file.commit()
        array_file.commit()
    except OSError as error:
        raise LincaeError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        array_file.discard()
        sidecar_file.discard()


def read_npy(path: str | os.PathLike[str]) -> LatentFile:
    """The latents of a ``.npy`` file with the metadata of its sidecar, checked as a `.lat`
    file is; a ``.npy`` without its sidecar is an error that says what to give."""
    latents, meta = load_npy(path)
    if meta is None:
        raise LincaeError(
            f"{path}: no sidecar {sidecar_path(path).name} beside it to say which model made "
            f"these latents and at what sample rate; give the sidecar, or decode them with "
            f"`lincae decode {path} --model MODEL --sample-rate HZ`"
        )
    lat = LatentFile(latents, meta)
    validate_latent_file(lat, os.fspath(path))
    return lat


def load_npy(path: str | os.PathLike[str]) -> tuple[np.ndarray, LatentMeta | None]:
    """The latents of a ``.npy`` file as float32 ``[channels, latent_channels, frames]``
    (floating point, finite, no empty dimension) and the metadata of its sidecar (None when
    there is none)."""
    name = os.fspath(path)
    stored = _load_array(Path(path), name)
    if stored.dtype.kind != "f":
        raise LincaeError(f"{name}: latents must be float16 or float32, not {stored.dtype}")
    if stored.ndim != 3 or min(stored.shape) < 1:
        raise LincaeError(
            f"{name}: latents must be shaped [channels, latent_channels, frames], "
            f"not {tuple(stored.shape)}"
        )
    latents = stored.astype(np.float32)
    if not bool(np.isfinite(latents).all()):
        raise LincaeError(f"{name}: latents contain NaN or Inf values")
    return latents, _read_sidecar(sidecar_path(path))


def npy_dtype(path: str | os.PathLike[str]) -> str:
    """The dtype a ``.npy`` file stores its latents in (``float16``), read without loading."""
    return _load_array(Path(path), os.fspath(path), mapped=True).dtype.name


def _load_array(path: Path, name: str, mapped: bool = False) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise LincaeError(f"{name}: not a .npy file (no NumPy array header)")
            handle.seek(0)
            if mapped:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            return np.load(handle, allow_pickle=False)
    except FileNotFoundError:
        raise LincaeError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise LincaeError(f"{name}: is a directory, not a .npy file") from None
    except OSError as error:
        raise LincaeError(f"{name}: cannot read ({error.strerror or error})") from None
    except (ValueError, EOFError) as error:
        raise LincaeError(f"{name}: corrupt .npy file ({first_line(error)})") from None


def _read_sidecar(sidecar: Path) -> LatentMeta | None:
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise LincaeError(f"{sidecar}: is a directory, not a sidecar") from None
    except OSError as error:
        raise LincaeError(f"{sidecar}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise LincaeError(f"{sidecar}: not a lincae sidecar (not UTF-8 text)") from None
    return meta_from_json(text, str(sidecar))


@dataclass(frozen=True)
class BareLatents:
    """A ``.npy`` without its sidecar: float32 latents ``[channels, latent_channels, frames]``
    and the sample rate the user gave for their audio (``--sample-rate``)."""

    latents: np.ndarray
    source_sample_rate: int
    name: str

    def with_model(self, model: LatentMeta) -> LatentFile:
        """These latents with ``model``'s facts (name, sha256, rates, framing, silence latent:
        a `LatentMeta` of any length), covering the span of their frames."""
        meta = dataclasses.replace(
            model,
            source_sample_rate=self.source_sample_rate,
            channels=int(self.latents.shape[0]),
            num_samples=1,
            offset_samples=0,
            source_loudness_lufs=None,
            loudness_is_estimate=False,
            provenance=[provenance_entry("import", input=self.name, format="npy")],
        )
        frames = int(self.latents.shape[2])
        meta = dataclasses.replace(meta, num_samples=span_samples(meta, frames, self.name))
        lat = LatentFile(self.latents, meta)
        validate_latent_file(lat, self.name)
        return lat


def span_samples(meta: LatentMeta, frames: int, name: str) -> int:
    """Source-rate samples that ``frames`` latent frames span: to the end of the last STFT
    frame of the last latent frame (``frames · H + n_fft − hop`` at the model rate), at
    ``meta``'s rates, adjusted so that the frame-count rule gives ``frames`` again."""
    framing = framing_of(meta.chunking)
    overhang = 0 if framing is None else framing["n_fft"] - framing["stft_hop"]
    model_span = frames * meta.latent_hop_samples + overhang
    count = max(1, resampled_length(model_span, meta.model_sample_rate, meta.source_sample_rate))

    def frames_of(num_samples: int) -> int:
        return dataclasses.replace(meta, num_samples=num_samples).expected_frames

    while count > 1 and frames_of(count) > frames:
        count -= 1
    while frames_of(count) < frames:
        count += 1
    if frames_of(count) != frames:  # a rate far above the model's could step over a count
        raise LincaeError(f"{name}: no length at {meta.source_sample_rate} Hz has {frames} frames")
    return count
