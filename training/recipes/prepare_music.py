"""Prepare a music set from the game soundtracks packaged by Debian.

Each track of the packages in ``PACKAGES`` is decoded, down-mixed to mono, resampled to
44.1 kHz and written as 16-bit FLAC to ``<output>/{train,valid}/<package>__<stem>.flac``,
with a ``manifest.json`` next to the two folders. Runs are idempotent: tracks already
written are kept. Usage::

    apt-get install -y wesnoth-1.16-music warzone2100-music
    python -m lincae_training.recipes.prepare_music [--output DIR] [--valid-fraction 0.05]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lincae_cli.errors import LincaeError

from .dataset_io import (
    DATA_ROOT,
    SAMPLE_RATE,
    TRAIN,
    VALID,
    recipe_parser,
    split_for_name,
    to_mono,
    write_audio_atomic,
    write_json_atomic,
)

PACKAGES = ("wesnoth-1.16-music", "warzone2100-music")
# Wesnoth ships Ogg Vorbis (.ogg); Warzone 2100 ships Ogg Opus (.opus). libsndfile reads both.
AUDIO_SUFFIXES = (".ogg", ".opus")
DEFAULT_OUTPUT = DATA_ROOT / "music"
DEFAULT_VALID_FRACTION = 0.05


@dataclass(frozen=True)
class Track:
    """One source file and where it goes in the prepared set."""

    source: Path
    package: str
    name: str  # output file name, ``<package>__<stem>.flac``
    split: str  # "train" or "valid"

    @property
    def relative_path(self) -> str:
        return f"{self.split}/{self.name}"


def audio_files_in_listing(listing: str) -> list[Path]:
    """Pick the audio files out of ``dpkg -L`` output (one path per line), sorted."""
    paths = (Path(line.strip()) for line in listing.splitlines() if line.strip())
    return sorted(path for path in paths if path.suffix.lower() in AUDIO_SUFFIXES)


def output_name(package: str, source: Path) -> str:
    """The prepared file name of ``source``: ``<package>__<stem>.flac``."""
    return f"{package}__{source.stem}.flac"


def plan_tracks(files_by_package: dict[str, Sequence[Path]], valid_fraction: float) -> list[Track]:
    """Name every source file and assign its split by hashing the output name."""
    tracks: list[Track] = []
    seen: dict[str, Path] = {}
    for package, sources in sorted(files_by_package.items()):
        for source in sources:
            name = output_name(package, source)
            if name in seen:
                raise LincaeError(f"{source} and {seen[name]} would both be written as {name}")
            seen[name] = source
            tracks.append(Track(source, package, name, split_for_name(name, valid_fraction)))
    return tracks


def build_manifest(tracks: Iterable[Track], durations_seconds: dict[str, float]) -> dict:
    """The manifest: one entry per prepared file (keyed by relative path) and hours per split.

    ``durations_seconds`` maps ``Track.relative_path`` to the duration of the written file.
    """
    files: dict[str, dict] = {}
    seconds_per_split = {TRAIN: 0.0, VALID: 0.0}
    files_per_split = {TRAIN: 0, VALID: 0}
    for track in tracks:
        duration = durations_seconds[track.relative_path]
        files[track.relative_path] = {
            "source": str(track.source),
            "package": track.package,
            "duration_seconds": round(duration, 3),
            "split": track.split,
        }
        seconds_per_split[track.split] += duration
        files_per_split[track.split] += 1
    return {
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "format": "FLAC PCM_16",
        "files": files,
        "totals": {
            "files": files_per_split,
            "hours": {split: round(s / 3600, 3) for split, s in seconds_per_split.items()},
        },
    }


def list_package_audio(package: str) -> list[Path]:
    """The audio files installed by a Debian package (raises if it is not installed)."""
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if result.returncode != 0:
        raise LincaeError(f"package {package} is not installed: apt-get install -y {package}")
    files = audio_files_in_listing(result.stdout)
    if not files:
        raise LincaeError(f"package {package} installs no {'/'.join(AUDIO_SUFFIXES)} files")
    return files


def convert_track(source: Path, destination: Path) -> None:
    """Decode ``source``, down-mix to mono, resample to 44.1 kHz, write 16-bit FLAC."""
    audio, source_rate = sf.read(source, dtype="float32", always_2d=True)
    mono = to_mono(audio)
    if source_rate != SAMPLE_RATE:
        mono = soxr.resample(mono, source_rate, SAMPLE_RATE, quality="HQ")
    # Resampling can overshoot full scale a little; clip rather than let PCM wrap around.
    write_audio_atomic(destination, np.clip(mono, -1.0, 1.0), SAMPLE_RATE, "PCM_16")


def prepare_music(output: Path, packages: Sequence[str], valid_fraction: float) -> dict:
    """Convert every track not yet present, write ``manifest.json`` and return the manifest."""
    tracks = plan_tracks(
        {package: list_package_audio(package) for package in packages}, valid_fraction
    )
    durations_seconds: dict[str, float] = {}
    for index, track in enumerate(tracks, start=1):
        destination = output / track.relative_path
        if destination.exists():
            status = "kept"
        else:
            convert_track(track.source, destination)
            status = "wrote"
        info = sf.info(destination)
        durations_seconds[track.relative_path] = info.frames / info.samplerate
        print(f"[{index}/{len(tracks)}] {status} {track.relative_path}", flush=True)
    manifest = build_manifest(tracks, durations_seconds)
    write_json_atomic(output / "manifest.json", manifest)
    return manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = recipe_parser(__spec__.name, __doc__, DEFAULT_OUTPUT)
    parser.add_argument(
        "--packages",
        nargs="+",
        default=list(PACKAGES),
        help="Debian packages to take the tracks from (default: %(default)s)",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=DEFAULT_VALID_FRACTION,
        help="share of tracks hashed into valid/ (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = prepare_music(args.output.expanduser(), args.packages, args.valid_fraction)
    except LincaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    hours = manifest["totals"]["hours"]
    files = manifest["totals"]["files"]
    print(
        f"total {hours[TRAIN] + hours[VALID]:.2f} h: train {hours[TRAIN]:.2f} h "
        f"({files[TRAIN]} files), valid {hours[VALID]:.2f} h ({files[VALID]} files) "
        f"in {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
