"""Finding and cutting the audio `lincae eval` runs on: folders of clips and folders of stems.

A *song folder* holds one audio file per stem (`bass`, `drums`, `other`, `vocals`, ... and
optionally `mixture`, as in MUSDB18 and our stems data); any other audio file is a *clip file*.
The mixture of a song is always the sum of its stems (a linear model is judged on exact sums),
so `mixture.*` files are not read.

Segments are cut deterministically (see `select_segments` and docs/metrics.md): each file is
mixed to mono and resampled to the model rate, cut into non-overlapping segments, silent ones are
dropped, and the rest are taken in a spread-out order, round-robin across files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lincae_cli.audio.io import is_audio_path, read_audio, resample
from lincae_cli.errors import LincaeError
from lincae_cli.nn.config import ModelConfig

MIXTURE_NAME = "mixture"
KNOWN_STEMS = ("bass", "drums", "other", "vocals")
SILENCE_RMS = 1e-3
"""Segments (and stems within a song segment) at or below this RMS count as silent."""


@dataclass(frozen=True)
class Song:
    """One song folder: stem name -> file."""

    name: str
    stems: dict[str, Path]


@dataclass
class EvalSources:
    """What `discover` found: clip files and song folders."""

    clip_files: list[Path] = field(default_factory=list)
    songs: list[Song] = field(default_factory=list)


@dataclass(frozen=True)
class ClipLayout:
    """How long evaluation segments are for one model framing.

    A segment of `samples` = latent_frames·latent_hop + n_fft − hop samples fills exactly
    `latent_frames` latent frames, and decodes back to `samples` samples. `margin` = n_fft − hop
    samples at each end are covered by fewer STFT windows and left out of every comparison.
    """

    latent_frames: int
    samples: int
    margin: int
    sample_rate: int


def clip_layout(seconds: float, config: ModelConfig) -> ClipLayout:
    """The segment layout for `seconds` of audio (rounded to whole latent frames, at least 1)."""
    if not seconds > 0:
        raise LincaeError(f"--seconds must be positive, not {seconds}")
    frames = max(1, round(seconds * config.sample_rate / config.latent_hop_samples))
    margin = config.n_fft - config.hop
    return ClipLayout(
        latent_frames=frames,
        samples=frames * config.latent_hop_samples + margin,
        margin=margin,
        sample_rate=config.sample_rate,
    )


@dataclass
class EvalSet:
    """Segments ready for `linearity.evaluate`, at `layout.sample_rate`.

    `clips` `[clips, samples]` are the clip-file segments; `stems` `[songs, stems, samples]`
    the song segments (their mixture is the sum over stems), `active` `[songs, stems]` marks
    stems with RMS > SILENCE_RMS.
    """

    layout: ClipLayout
    clips: torch.Tensor
    clip_names: list[str]
    stems: torch.Tensor
    active: torch.Tensor
    stem_names: list[str]
    segment_names: list[str]


def _is_song_folder(audio_files: Sequence[Path]) -> bool:
    names = {path.stem.lower() for path in audio_files}
    if MIXTURE_NAME in names:
        return len(names) >= 2
    return len(names & set(KNOWN_STEMS)) >= 2


def discover(paths: Sequence[str | os.PathLike[str]]) -> EvalSources:
    """Clip files and song folders under `paths` (files or folders, searched recursively)."""
    sources = EvalSources()
    for given in paths:
        path = Path(given)
        if path.is_file():
            if not is_audio_path(path):
                raise LincaeError(f"{path}: not an audio file")
            sources.clip_files.append(path)
            continue
        if not path.is_dir():
            raise LincaeError(f"{path}: no such file or folder")
        for folder, subfolders, files in os.walk(path):
            subfolders.sort()
            audio = [Path(folder) / name for name in sorted(files) if is_audio_path(name)]
            if _is_song_folder(audio):
                stems = {f.stem.lower(): f for f in audio if f.stem.lower() != MIXTURE_NAME}
                relative = Path(folder).relative_to(path)
                name = str(relative) if relative.parts else path.resolve().name
                sources.songs.append(Song(name, stems))
            else:
                sources.clip_files.extend(audio)
    if not sources.clip_files and not sources.songs:
        shown = ", ".join(str(p) for p in paths)
        raise LincaeError(f"no audio files or stem folders found in {shown}")
    return sources


def stem_order(songs: Sequence[Song]) -> list[str]:
    """All stem names of `songs`: the known ones first (bass, drums, other, vocals), then A-Z."""
    names = {name for song in songs for name in song.stems}
    known = [name for name in KNOWN_STEMS if name in names]
    return known + sorted(names - set(known))


def spread_order(count: int) -> list[int]:
    """0..count-1 ordered to spread out: the middle first, then the quarters, eighths, ...

    Indices are floor(v·count) for the base-2 van der Corput sequence v = 1/2, 1/4, 3/4, ...
    with repeats skipped.
    """
    order: list[int] = []
    seen: set[int] = set()
    index = 1
    while len(order) < count:
        value, denominator, rest = 0.0, 1.0, index
        while rest:
            denominator *= 2
            value += (rest & 1) / denominator
            rest >>= 1
        position = min(count - 1, math.floor(value * count))
        if position not in seen:
            seen.add(position)
            order.append(position)
        index += 1
    return order


def select_segments(loudness: np.ndarray, limit: int) -> list[int]:
    """Indices of up to `limit` segments, given each candidate segment's RMS `[segments]`.

    Silent segments (RMS <= SILENCE_RMS) are skipped; the others are taken in `spread_order`.
    """
    audible = [index for index, rms in enumerate(loudness) if rms > SILENCE_RMS]
    return [audible[position] for position in spread_order(len(audible))[:limit]]


def _mono(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = read_audio(path)
    mono = audio.mean(axis=0, keepdims=True, dtype=np.float32)
    return resample(mono, rate, sample_rate)[0]


def _segments(audio: np.ndarray, samples: int) -> np.ndarray:
    """Non-overlapping segments `[segments, samples]` from the start; the tail is dropped."""
    count = audio.shape[-1] // samples
    return audio[..., : count * samples].reshape(*audio.shape[:-1], count, samples)


def _rms(segments: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(segments, dtype=np.float64), axis=-1))


def _label(name: str, segment: int, layout: ClipLayout) -> str:
    return f"{name}@{segment * layout.samples / layout.sample_rate:.1f}s"


def _round_robin(per_file: list[list[tuple[str, np.ndarray]]], limit: int) -> list:
    chosen: list[tuple[str, np.ndarray]] = []
    rank = 0
    while len(chosen) < limit and any(rank < len(items) for items in per_file):
        chosen.extend(items[rank] for items in per_file if rank < len(items))
        rank += 1
    return chosen[:limit]


def load_eval_set(sources: EvalSources, layout: ClipLayout, max_clips: int) -> EvalSet:
    """Cut up to `max_clips` clip segments and up to `max_clips` song segments.

    Each file gives at most ceil(max_clips / files) segments, so the totals can be lower when
    some files are short or quiet. Song segments are chosen on the mixture (sum of stems).
    """
    if max_clips < 1:
        raise LincaeError(f"--max-clips must be at least 1, not {max_clips}")
    samples, rate = layout.samples, layout.sample_rate
    per_file = math.ceil(max_clips / max(1, len(sources.clip_files)))
    clip_candidates = []
    for path in sources.clip_files:
        segments = _segments(_mono(path, rate), samples)
        chosen = select_segments(_rms(segments), per_file)
        clip_candidates.append([(_label(path.name, i, layout), segments[i].copy()) for i in chosen])
    clips = _round_robin(clip_candidates, max_clips)

    stem_names = stem_order(sources.songs)
    per_song = math.ceil(max_clips / max(1, len(sources.songs)))
    song_candidates = []
    for song in sources.songs:
        tracks = {name: _mono(path, rate) for name, path in song.stems.items()}
        length = max(track.shape[-1] for track in tracks.values())
        stacked = np.zeros((len(stem_names), length), dtype=np.float32)
        for row, name in enumerate(stem_names):
            if name in tracks:
                stacked[row, : tracks[name].shape[-1]] = tracks[name]
        segments = _segments(stacked, samples)  # [stems, segments, samples]
        chosen = select_segments(_rms(segments.sum(0)), per_song)
        song_candidates.append(
            [(_label(song.name, i, layout), segments[:, i].copy()) for i in chosen]
        )
    songs = _round_robin(song_candidates, max_clips)

    if not clips and not songs:
        raise LincaeError(
            f"no audible segment of {samples / rate:.2f} s in the data "
            "(files too short or silent; try a smaller --seconds)"
        )
    clip_audio = np.stack([c for _, c in clips]) if clips else np.zeros((0, samples), np.float32)
    stems = np.stack([s for _, s in songs]) if songs else np.zeros((0, len(stem_names), samples))
    return EvalSet(
        layout=layout,
        clips=torch.from_numpy(clip_audio),
        clip_names=[name for name, _ in clips],
        stems=torch.from_numpy(stems.astype(np.float32)),
        active=torch.from_numpy(_rms(stems) > SILENCE_RMS),
        stem_names=stem_names,
        segment_names=[name for name, _ in songs],
    )
