"""Training data: folders of audio, decoded and resampled once into a cached int16 array.

A crop is a pure function of (seed, step, example index), so any step of a run can be replayed:
resuming needs no data-loader state.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lincae_cli.atomic import atomic_output
from lincae_cli.errors import LincaeError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus", ".w64"}
SPLITS = ("train", "valid")


def lincae_cache_root() -> Path:
    env = os.environ.get("LINCAE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lincae"


def find_audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def split_of(path: Path, root: Path, valid_fraction: float) -> str:
    """Deterministic split: a `train/` or `valid/` folder under the root decides; otherwise a
    hash of the relative path puts about `valid_fraction` of the files in `valid`."""
    parts = path.relative_to(root).parts
    if parts and parts[0] in SPLITS:
        return parts[0]
    digest = hashlib.sha1(str(path.relative_to(root)).encode()).digest()
    return "valid" if int.from_bytes(digest[:4], "big") / 2**32 < valid_fraction else "train"


@dataclass
class AudioStore:
    """Many mono clips concatenated in one int16 memory map; `offsets[i]:offsets[i+1]` is clip i."""

    audio: np.ndarray
    offsets: np.ndarray
    names: list[str]

    @property
    def total_samples(self) -> int:
        return int(self.offsets[-1])

    def clip(self, index: int) -> np.ndarray:
        return self.audio[self.offsets[index] : self.offsets[index + 1]]


def _decode_mono(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    if not np.all(np.isfinite(mono)):
        raise ValueError("non-finite samples")
    return np.clip(mono, -1.0, 1.0)


def build_store(
    files: list[Path], cache_dir: Path, sample_rate: int, min_samples: int, label: str
) -> AudioStore:
    """Decode, resample and cache `files` (skipping unreadable or too-short ones, with a
    warning and a count). The cache key covers paths, sizes, modification times and the
    minimum length (which decides what is skipped)."""
    signature = hashlib.sha256(f"min_samples={min_samples}".encode())
    for path in files:
        stat = path.stat()
        signature.update(
            f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sample_rate}".encode()
        )
    folder = cache_dir / signature.hexdigest()[:20]
    index_path, audio_path = folder / "index.json", folder / "audio.int16"
    if index_path.exists() and audio_path.exists():
        index = json.loads(index_path.read_text())
        _warn_skipped(label, index.get("unreadable", []), index.get("short", 0))
        offsets = np.asarray(index["offsets"], dtype=np.int64)
        return AudioStore(_map_audio(audio_path, int(offsets[-1])), offsets, index["names"])

    folder.mkdir(parents=True, exist_ok=True)
    offsets, names, unreadable, short = [0], [], [], 0
    with atomic_output(audio_path) as tmp, open(tmp, "wb") as out:
        for path in files:
            try:
                mono = _decode_mono(path, sample_rate)
            except Exception as exc:  # soundfile/soxr raise many types for bad files
                unreadable.append(f"{path}: {exc}")
                continue
            if mono.shape[0] < min_samples:
                short += 1
                continue
            out.write(np.round(mono * 32767.0).astype(np.int16).tobytes())
            offsets.append(offsets[-1] + mono.shape[0])
            names.append(str(path))
    _warn_skipped(label, unreadable, short)
    index = {"offsets": offsets, "names": names, "unreadable": unreadable, "short": short}
    with atomic_output(index_path) as tmp:
        tmp.write_text(json.dumps(index))
    return AudioStore(
        _map_audio(audio_path, offsets[-1]), np.asarray(offsets, dtype=np.int64), names
    )


def _map_audio(path: Path, total_samples: int) -> np.ndarray:
    # mmap refuses empty files, and an empty store (e.g. no validation files) is normal.
    if total_samples == 0:
        return np.zeros(0, np.int16)
    return np.memmap(path, dtype=np.int16, mode="r")


def _warn_skipped(label: str, unreadable: list[str], short: int) -> None:
    """Warn on every load, cached or not: a skipped file stays skipped until it is fixed."""
    if unreadable:
        warnings.warn(
            f"{label}: skipped {len(unreadable)} unreadable file(s), e.g. {unreadable[0]}",
            stacklevel=3,
        )
    if short:
        warnings.warn(f"{label}: skipped {short} file(s) shorter than one crop", stacklevel=3)


class CropSampler:
    """Random fixed-length crops from an AudioStore, rejecting near-silent ones."""

    def __init__(self, store: AudioStore, crop_samples: int, rms_threshold: float, seed: int):
        self.store = store
        self.crop_samples = crop_samples
        self.rms_threshold = rms_threshold
        self.seed = seed
        lengths = np.diff(store.offsets)
        usable = np.maximum(lengths - crop_samples + 1, 0).astype(np.float64)
        if usable.sum() <= 0:
            raise LincaeError("no clip is as long as one training crop")
        self.weights = usable / usable.sum()

    def crop(self, step: int, index: int) -> np.ndarray:
        """Crop number `index` of training step `step`: float32 `[crop_samples]`."""
        rng = np.random.default_rng([self.seed, step, index])
        crop = None
        for _ in range(32):
            clip = int(rng.choice(len(self.weights), p=self.weights))
            start = int(self.store.offsets[clip]) + int(
                rng.integers(
                    0,
                    self.store.offsets[clip + 1] - self.store.offsets[clip] - self.crop_samples + 1,
                )
            )
            crop = self.store.audio[start : start + self.crop_samples].astype(np.float32) / 32767.0
            if np.sqrt(np.mean(crop**2)) >= self.rms_threshold:
                return crop
        assert crop is not None
        return crop  # a silent stretch of data; keep it rather than loop forever

    def batch(self, step: int, indices: range) -> np.ndarray:
        return np.stack([self.crop(step, i) for i in indices])


@dataclass
class Datasets:
    train: CropSampler
    valid: AudioStore
    description: dict


def load_datasets(
    roots: list[Path],
    sample_rate: int,
    crop_samples: int,
    rms_threshold: float,
    valid_fraction: float,
    seed: int,
    cache_dir: Path | None = None,
) -> Datasets:
    """Scan `roots`, split into train/valid, decode (cached) and build the crop sampler."""
    cache_dir = cache_dir or lincae_cache_root() / "datasets"
    by_split: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for root in roots:
        if not root.is_dir():
            raise LincaeError(f"{root}: data folder not found")
        files = find_audio_files(root)
        if not files:
            raise LincaeError(
                f"{root}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})"
            )
        for path in files:
            by_split[split_of(path, root, valid_fraction)].append(path)
    if not by_split["train"]:
        raise LincaeError("no training files (every file fell in the validation split)")
    train = build_store(by_split["train"], cache_dir, sample_rate, crop_samples, "train")
    if len(train.names) == 0:
        raise LincaeError("no usable training audio (all files unreadable or too short)")
    valid = build_store(by_split["valid"], cache_dir, sample_rate, crop_samples, "valid")
    description = {
        "roots": [str(r) for r in roots],
        "train_files": len(train.names),
        "train_hours": round(train.total_samples / sample_rate / 3600, 3),
        "valid_files": len(valid.names),
        "valid_hours": round(valid.total_samples / sample_rate / 3600, 3),
    }
    return Datasets(CropSampler(train, crop_samples, rms_threshold, seed), valid, description)


def validation_clips(store: AudioStore, count: int, samples: int, seed: int) -> np.ndarray:
    """`count` fixed clips `[count, samples]` from the validation store (evenly over its files,
    skipping silent starts); empty when the store has none."""
    if len(store.names) == 0:
        return np.zeros((0, samples), np.float32)
    rng = np.random.default_rng([seed, 999])
    clips = []
    for k in range(count):
        clip = store.clip(k % len(store.names))
        if clip.shape[0] < samples:
            continue
        for _ in range(8):
            start = int(rng.integers(0, clip.shape[0] - samples + 1))
            piece = clip[start : start + samples].astype(np.float32) / 32767.0
            if np.sqrt(np.mean(piece**2)) > 0.01:
                break
        clips.append(piece)
    return np.stack(clips) if clips else np.zeros((0, samples), np.float32)
