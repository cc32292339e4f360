"""Training data: folders of audio, and MUSDB18 / MUSDB18-HQ through the `musdb` package,
decoded and resampled once into a cached int16 array.

A crop is a pure function of (seed, step, example index), so any step of a run can be replayed:
resuming needs no data-loader state.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from lincae_cli.atomic import atomic_output
from lincae_cli.errors import LincaeError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus", ".w64"}
SPLITS = ("train", "valid")
# `--data musdb:PATH` names a MUSDB18 (.stem.mp4) or MUSDB18-HQ (wav folders) root.
MUSDB_PREFIX = "musdb:"


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
    return hashed_split(str(path.relative_to(root)), valid_fraction)


def hashed_split(key: str, valid_fraction: float) -> str:
    """`valid` for about `valid_fraction` of all keys, always the same for one key."""
    digest = hashlib.sha1(key.encode()).digest()
    return "valid" if int.from_bytes(digest[:4], "big") / 2**32 < valid_fraction else "train"


@dataclass(frozen=True)
class AudioItem:
    """One clip to decode: a whole audio file, or one stream of a multi-stream file (a stem of
    a MUSDB18 `.stem.mp4`), which `read` returns as `([samples] or [samples, channels], rate)`."""

    path: Path
    stream: str = ""  # "" = the whole file, read with soundfile
    read: Callable[[], tuple[np.ndarray, int]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def name(self) -> str:
        return f"{self.path}#{self.stream}" if self.stream else str(self.path)

    def cache_key(self, sample_rate: int) -> str:
        """Path (plus stream), size and modification time: a changed file is decoded again.
        A missing file gets a key too; decoding it then counts it as unreadable."""
        try:
            stat = self.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = -1
        stream = f"#{self.stream}" if self.stream else ""
        return f"{self.path.resolve()}{stream}|{size}|{mtime}|{sample_rate}"


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


def _decode_mono(item: AudioItem, sample_rate: int) -> np.ndarray:
    if item.read is None:
        audio, rate = sf.read(str(item.path), dtype="float32", always_2d=True)
    else:
        audio, rate = item.read()
        audio = np.asarray(audio, dtype=np.float32).reshape(len(audio), -1)
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    if not np.all(np.isfinite(mono)):
        raise ValueError("non-finite samples")
    return np.clip(mono, -1.0, 1.0)


def build_store(
    files: list[Path] | list[AudioItem],
    cache_dir: Path,
    sample_rate: int,
    min_samples: int,
    label: str,
) -> AudioStore:
    """Decode, resample and cache `files` (skipping unreadable or too-short ones, with a
    warning and a count). The cache key covers paths (and streams), sizes, modification times
    and the minimum length (which decides what is skipped)."""
    items = [f if isinstance(f, AudioItem) else AudioItem(f) for f in files]
    signature = hashlib.sha256(f"min_samples={min_samples}".encode())
    for item in items:
        signature.update(item.cache_key(sample_rate).encode())
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
        for item in items:
            try:
                mono = _decode_mono(item, sample_rate)
            except Exception as exc:  # soundfile/soxr/ffmpeg raise many types for bad files
                unreadable.append(f"{item.name}: {exc}")
                continue
            if mono.shape[0] < min_samples:
                short += 1
                continue
            out.write(np.round(mono * 32767.0).astype(np.int16).tobytes())
            offsets.append(offsets[-1] + mono.shape[0])
            names.append(item.name)
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


class DeviceCropSampler:
    """CropSampler's crops drawn a whole batch at a time on a torch device that holds the
    store's int16 audio (`data.on_device`): on a GPU, no per-crop Python work and no copies.

    The same distribution (clips weighted by their usable length, uniform starts, near-silent
    crops redrawn), from another random stream: one generator on the device per batch, seeded by
    (seed, step, first index), so a batch is still a pure function of the step and resuming
    needs no state.
    """

    # Candidates per crop; the first loud enough is kept, else the last (CropSampler draws up
    # to 32 in turn, which a batched draw cannot do without a loop).
    CANDIDATES = 4

    def __init__(self, sampler: CropSampler, device: torch.device | str) -> None:
        store = sampler.store
        self.device = torch.device(device)
        self.crop_samples = sampler.crop_samples
        self.rms_threshold = sampler.rms_threshold
        self.seed = sampler.seed
        # A copy: the store is a read-only memory map (torch wants writable arrays).
        self.audio = torch.from_numpy(np.array(store.audio)).to(self.device)
        offsets = torch.from_numpy(np.asarray(store.offsets, dtype=np.int64))
        self.clip_starts = offsets[:-1].to(self.device)
        lengths = offsets[1:] - offsets[:-1]
        self.usable = (lengths - self.crop_samples + 1).clamp(min=0).to(self.device)
        self.weights = torch.from_numpy(sampler.weights).float().to(self.device)
        self.window = torch.arange(self.crop_samples, device=self.device)

    def batch(self, step: int, indices: range) -> torch.Tensor:
        """Crops `indices` of training step `step`: float32 `[len(indices), crop_samples]` on
        the device."""
        count, candidates = len(indices), self.CANDIDATES
        state = np.random.SeedSequence([self.seed, step, indices.start, 7]).generate_state(2)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        clips = torch.multinomial(
            self.weights, count * candidates, replacement=True, generator=generator
        )
        uniform = torch.rand(
            count * candidates, generator=generator, device=self.device, dtype=torch.float64
        )
        starts = self.clip_starts[clips] + (uniform * self.usable[clips]).long()
        crops = self.audio[starts[:, None] + self.window].float() / 32767.0
        crops = crops.view(count, candidates, self.crop_samples)
        loud = crops.square().mean(dim=-1).sqrt() >= self.rms_threshold  # [count, candidates]
        first_loud = torch.where(loud.any(dim=1), loud.int().argmax(dim=1), candidates - 1)
        return crops[torch.arange(count, device=self.device), first_loud]


@dataclass
class Datasets:
    train: CropSampler | DeviceCropSampler
    valid: AudioStore
    description: dict


def load_datasets(
    roots: list[Path] | list[str] | list[Path | str],
    sample_rate: int,
    crop_samples: int,
    rms_threshold: float,
    valid_fraction: float,
    seed: int,
    cache_dir: Path | None = None,
) -> Datasets:
    """Scan `roots` (folders, or `musdb:PATH`), split into train/valid, decode (cached) and
    build the crop sampler."""
    cache_dir = cache_dir or lincae_cache_root() / "datasets"
    by_split: dict[str, list[AudioItem]] = {split: [] for split in SPLITS}
    for source in roots:
        if str(source).startswith(MUSDB_PREFIX):
            musdb_root = Path(str(source)[len(MUSDB_PREFIX) :]).expanduser()
            for split, items in musdb_items(musdb_root, valid_fraction).items():
                by_split[split].extend(items)
            continue
        root = Path(source)
        if root.is_file():
            raise LincaeError(
                f"{root}: --data takes a folder of audio files, not a file; pass a folder "
                "(one holding just this file, to train on it alone)"
            )
        if not root.is_dir():
            raise LincaeError(f"{root}: data folder not found")
        files = find_audio_files(root)
        if not files:
            raise LincaeError(
                f"{root}: no audio files found (looked for {', '.join(sorted(AUDIO_SUFFIXES))})"
            )
        for path in files:
            by_split[split_of(path, root, valid_fraction)].append(AudioItem(path))
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


# -- MUSDB18 -------------------------------------------------------------------------------------

# What a MUSDB18 track contributes: Lin-CAE trains on the mixture and on each stem, as separate
# clips (mixtures of mixtures are then drawn across the batch by the augmentation).
MUSDB_PARTS = ("mixture", "drums", "bass", "other", "vocals")


def musdb_items(root: Path, valid_fraction: float) -> dict[str, list[AudioItem]]:
    """The mixture and stems of every track of MUSDB's `train` subset, by split: musdb's own
    train/valid split of that subset (its list of validation tracks) decides ours; the `test`
    subset is never used. When none of musdb's validation tracks is present (a partial or
    renamed copy), tracks are split by a hash of their names instead, with a warning.
    MUSDB18-HQ wav folders are decoded with soundfile, MUSDB18 `.stem.mp4` streams through
    musdb (stempeg and ffmpeg)."""
    musdb = _import_musdb()
    train_folder = root / "train"
    if not train_folder.is_dir():
        raise LincaeError(f"musdb:{root}: not a MUSDB18 folder (no train/ subfolder)")
    is_wav = any(train_folder.glob("*/mixture.wav"))
    if not is_wav and not any(train_folder.glob("*.stem.mp4")):
        raise LincaeError(
            f"musdb:{root}: no MUSDB18 tracks in train/ "
            "(neither <track>/mixture.wav folders nor <track>.stem.mp4 files)"
        )
    tracks = {}
    for split in SPLITS:
        try:
            db = musdb.DB(root=str(root), is_wav=is_wav, subsets="train", split=split)
        except Exception as exc:  # ffprobe, run on every mixture, fails on unreadable ones
            raise LincaeError(
                f"musdb:{root}: musdb could not list the tracks ({_reason(exc)})"
            ) from None
        tracks[split] = db.tracks
    if not tracks["valid"]:
        warnings.warn(
            f"musdb:{root}: none of musdb's validation tracks is present; splitting the "
            f"train subset by track name instead (about {valid_fraction:.0%} to validation)",
            stacklevel=3,
        )
        every = tracks["train"]
        tracks = {
            split: [t for t in every if hashed_split(t.name, valid_fraction) == split]
            for split in SPLITS
        }
    return {
        split: [item for track in tracks[split] for item in _musdb_track_items(db, track, is_wav)]
        for split in SPLITS
    }


def _import_musdb():
    try:
        import musdb
    except ImportError:
        raise LincaeError(
            "--data musdb:PATH needs the musdb package: pip install musdb "
            "(or pip install 'lincae[musdb]')"
        ) from None
    except RuntimeError:  # its stempeg dependency refuses to import without ffmpeg
        raise LincaeError(
            "the musdb package needs ffmpeg and ffprobe on PATH, even for MUSDB18-HQ "
            "(e.g. apt-get install ffmpeg)"
        ) from None
    return musdb


def _musdb_track_items(db, track, is_wav: bool) -> list[AudioItem]:
    """One AudioItem per part of MUSDB_PARTS. A missing wav stem stays in the list, so that it
    is reported (and counted) as unreadable rather than silently left out."""
    files = {"mixture": db.setup["mixture"], **db.setup["sources"]}
    if is_wav:
        folder = Path(track.path).parent
        return [AudioItem(folder / files[part]) for part in MUSDB_PARTS]
    sources = {"mixture": track, **track.sources}
    return [
        AudioItem(Path(track.path), part, read=lambda s=sources[part]: (s.audio, track.rate))
        for part in MUSDB_PARTS
        if part in sources
    ]


def _reason(exc: Exception) -> str:
    """The last line of ffmpeg's stderr when there is one: it names the file and the fault."""
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, bytes):
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return str(exc) or type(exc).__name__


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
