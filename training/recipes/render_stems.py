"""Render a multi-stem set (bass, drums, other, vocals, mixture) from generated MIDI songs.

Each song is generated from ``(seed, song index)``: a random key, tempo (80-150 bpm) and
chord progression, 20-30 s long, with four parts. Each part is rendered on its own by the
``fluidsynth`` command with the FluidR3 General MIDI soundfont, down-mixed to mono and cut to
a common length; the mixture is the exact sample sum of the four stems. Songs land in
``<output>/{train,valid}/song_XXXX/{bass,drums,other,vocals,mixture}.flac`` (24-bit FLAC),
with a ``manifest.json``. Runs are idempotent: songs already written are kept. Usage::

    apt-get install -y fluidsynth fluid-soundfont-gm && pip install pretty_midi
    python -m lincae_training.recipes.render_stems [--songs 150] [--valid 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from lincae_cli.errors import LincaeError

from .dataset_io import (
    DATA_ROOT,
    SAMPLE_RATE,
    TRAIN,
    VALID,
    recipe_parser,
    to_mono,
    write_audio_atomic,
    write_json_atomic,
)

STEM_NAMES = ("bass", "drums", "other", "vocals")
MIXTURE = "mixture"
DEFAULT_OUTPUT = DATA_ROOT / "stems"
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PEAK = 0.9  # common peak of the written files: headroom, and nothing clips in PCM
TAIL_SECONDS = 1.5  # let the last notes and the reverb ring out
FLUIDSYNTH_GAIN = 0.5
# 24-bit quantisation keeps mixture - sum(stems) around 1e-6 after reading back.
STEM_SUBTYPE = "PCM_24"
MAX_WORKERS = 2

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Progressions as 0-based scale degrees, one chord per bar, looped over the song.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# General MIDI programs, 0-based as MIDI files store them (GM lists them 1-based).
BASS_PROGRAMS = (32, 33, 34, 38)  # acoustic, finger, pick, synth bass 1
CHORD_PROGRAMS = {
    "piano": (0, 1, 4),  # acoustic grand, bright acoustic, electric piano 1
    "guitar": (24, 25, 27),  # nylon, steel, clean electric
    "strings": (48, 49),  # string ensembles 1 and 2
    "organ": (16, 17, 19),  # drawbar, percussive, church
}
VOCAL_PROGRAMS = (52, 53, 54)  # Choir Aahs, Voice Oohs, Synth Voice
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # standard, room, power, electronic, 808, jazz, brush

# General MIDI percussion keys.
KICK, SNARE, CLOSED_HAT, OPEN_HAT, RIDE, CRASH = 36, 38, 42, 46, 51, 49
TOMS = (50, 48, 47, 45)  # high to low

# Bass rhythms for one 4/4 bar: (start beat, length in beats, chord tone).
BASS_PATTERNS = (
    ((0, 4, "root"),),
    ((0, 2, "root"), (2, 2, "fifth")),
    ((0, 1, "root"), (1, 1, "root"), (2, 1, "fifth"), (3, 1, "octave")),
    tuple((i * 0.5, 0.5, "root") for i in range(8)),
    ((0, 1.5, "root"), (1.5, 0.5, "root"), (2, 1, "fifth"), (3, 0.5, "root"), (3.5, 0.5, "octave")),
)
# Drum patterns on a 16-step grid per bar.
KICK_STEPS = ((0, 8), (0, 6, 8), (0, 10), (0, 4, 8, 12), (0, 3, 8, 11))
SNARE_STEPS = ((4, 12), (8,))
HAT_STEPS = {
    "quarters": tuple(range(0, 16, 4)),
    "eighths": tuple(range(0, 16, 2)),
    "sixteenths": tuple(range(16)),
}


@dataclass(frozen=True)
class SongSpec:
    """The random choices that define one song."""

    index: int
    tonic: int  # pitch class, 0 = C
    mode: str  # "major" or "minor"
    tempo_bpm: int
    progression: tuple[int, ...]  # 0-based scale degrees, one per bar
    bars: int
    programs: dict[str, int]  # stem -> GM program (drum kit number for "drums")

    @property
    def bar_seconds(self) -> float:
        return 4 * 60 / self.tempo_bpm

    @property
    def music_seconds(self) -> float:
        return self.bars * self.bar_seconds

    @property
    def key_name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    def chord_degree(self, bar: int) -> int:
        return self.progression[bar % len(self.progression)]


@dataclass
class Song:
    spec: SongSpec
    parts: dict[str, pretty_midi.Instrument]  # keyed by STEM_NAMES


def scale_pitch(spec: SongSpec, degree: int, base_pitch: int) -> int:
    """MIDI pitch of a scale degree (any integer, may cross octaves) above ``base_pitch``.

    ``base_pitch`` is a C; the tonic sits ``spec.tonic`` semitones above it.
    """
    octave, step = divmod(degree, 7)
    return base_pitch + spec.tonic + 12 * octave + SCALES[spec.mode][step]


def _note(pitch: int, start_seconds: float, end_seconds: float, velocity: int) -> pretty_midi.Note:
    return pretty_midi.Note(
        velocity=int(velocity), pitch=int(pitch), start=float(start_seconds), end=float(end_seconds)
    )


def _bass_part(spec: SongSpec, rng: np.random.Generator) -> pretty_midi.Instrument:
    part = pretty_midi.Instrument(program=spec.programs["bass"], name="bass")
    pattern = BASS_PATTERNS[rng.integers(len(BASS_PATTERNS))]
    beat = 60 / spec.tempo_bpm
    for bar in range(spec.bars):
        root = scale_pitch(spec, spec.chord_degree(bar), base_pitch=36)
        tone_pitch = {
            "root": root,
            "fifth": scale_pitch(spec, spec.chord_degree(bar) + 4, 36),
            "octave": root + 12,
        }
        for start_beats, length_beats, tone in pattern:
            start = bar * spec.bar_seconds + start_beats * beat
            end = start + 0.9 * length_beats * beat
            part.notes.append(_note(tone_pitch[tone], start, end, rng.integers(85, 110)))
    return part


def _drum_part(spec: SongSpec, rng: np.random.Generator) -> pretty_midi.Instrument:
    part = pretty_midi.Instrument(program=spec.programs["drums"], is_drum=True, name="drums")
    kick_steps = KICK_STEPS[rng.integers(len(KICK_STEPS))]
    snare_steps = SNARE_STEPS[rng.integers(len(SNARE_STEPS))]
    hat_steps = HAT_STEPS[("quarters", "eighths", "sixteenths")[rng.integers(3)]]
    hat_pitch = (CLOSED_HAT, CLOSED_HAT, RIDE)[rng.integers(3)]
    step_seconds = spec.bar_seconds / 16
    hit_seconds = 0.1  # percussion ignores note-off; keep notes short and clean

    def hit(pitch: int, bar: int, step: int, velocity: int) -> None:
        start = bar * spec.bar_seconds + step * step_seconds
        part.notes.append(_note(pitch, start, start + hit_seconds, velocity))

    for bar in range(spec.bars):
        fill = bar % 4 == 3 and bar != spec.bars - 1 and rng.random() < 0.6
        if bar % 8 == 0:
            hit(CRASH, bar, 0, 100)
        for step in range(16):
            if fill and step >= 12:
                hit(
                    TOMS[(step - 12) % len(TOMS)] if rng.random() < 0.7 else SNARE,
                    bar,
                    step,
                    rng.integers(90, 120),
                )
                continue
            if step in kick_steps:
                hit(KICK, bar, step, rng.integers(100, 120))
            if step in snare_steps:
                hit(SNARE, bar, step, rng.integers(95, 120))
            if step in hat_steps:
                accent = 20 if step % 4 == 0 else 0
                hit(hat_pitch, bar, step, rng.integers(60, 80) + accent)
        if hat_pitch == CLOSED_HAT and rng.random() < 0.25:
            hit(OPEN_HAT, bar, 14, 80)
    return part


def _chord_part(spec: SongSpec, rng: np.random.Generator, family: str) -> pretty_midi.Instrument:
    part = pretty_midi.Instrument(program=spec.programs["other"], name="other")
    # Sustaining instruments hold chords; plucked and struck ones may also stab or arpeggiate.
    styles = ("sustain",) if family in ("strings", "organ") else ("sustain", "stabs", "arpeggio")
    style = styles[rng.integers(len(styles))]
    offbeat = 0.5 if rng.random() < 0.5 else 0.0  # stabs on the beats or between them
    base_pitch = 60 if spec.tonic < 6 else 48
    beat = 60 / spec.tempo_bpm
    for bar in range(spec.bars):
        degree = spec.chord_degree(bar)
        chord = [scale_pitch(spec, degree + offset, base_pitch) for offset in (0, 2, 4)]
        bar_start = bar * spec.bar_seconds
        velocity = rng.integers(65, 90)
        if style == "sustain":
            for pitch in chord:
                part.notes.append(
                    _note(pitch, bar_start, bar_start + 0.98 * spec.bar_seconds, velocity)
                )
        elif style == "stabs":
            for start_beats in (offbeat, offbeat + 1, offbeat + 2, offbeat + 3):
                start = bar_start + start_beats * beat
                for pitch in chord:
                    part.notes.append(_note(pitch, start, start + 0.4 * beat, velocity))
        else:
            arpeggio = [*chord, chord[0] + 12, chord[2], chord[1]]  # up, then back down
            for eighth in range(8):
                start = bar_start + eighth * beat / 2
                pitch = arpeggio[eighth % len(arpeggio)]
                part.notes.append(_note(pitch, start, start + 0.45 * beat, velocity))
    return part


def _vocal_part(spec: SongSpec, rng: np.random.Generator) -> pretty_midi.Instrument:
    part = pretty_midi.Instrument(program=spec.programs["vocals"], name="vocals")
    base_pitch = 60 if spec.tonic < 6 else 48
    beat = 60 / spec.tempo_bpm
    lengths_beats = (0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0)
    steps = (-2, -1, -1, 0, 1, 1, 2, 3, -3)
    lowest, highest = -3, 9  # melody range in scale degrees around the tonic
    degree = int(rng.integers(0, 5))
    for phrase_start_bar in range(0, spec.bars, 2):
        # Rest for some phrases, as a singer breathes, but always sing the first one.
        if phrase_start_bar > 0 and rng.random() < 0.2:
            continue
        phrase_beats = 4 * min(2, spec.bars - phrase_start_bar)
        position = 0.0
        while position + 1.0 <= phrase_beats - 1.0:
            length = float(lengths_beats[rng.integers(len(lengths_beats))])
            length = min(length, phrase_beats - 1.0 - position)
            bar = phrase_start_bar + int(position // 4)
            degree = int(np.clip(degree + steps[rng.integers(len(steps))], lowest, highest))
            if position % 4 == 0:
                # Land on a chord tone at the start of each bar.
                chord_degrees = [spec.chord_degree(bar) + offset for offset in (0, 2, 4, 7, -3)]
                degree = min(chord_degrees, key=lambda chord_degree: abs(chord_degree - degree))
                degree = int(np.clip(degree, lowest, highest))
            start = phrase_start_bar * spec.bar_seconds + position * beat
            part.notes.append(
                _note(
                    scale_pitch(spec, degree, base_pitch),
                    start,
                    start + 0.95 * length * beat,
                    rng.integers(80, 105),
                )
            )
            position += length
    return part


def generate_song(seed: int, index: int) -> Song:
    """Generate song ``index`` of the set drawn from ``seed``; the same pair gives the same song.

    Each song has its own random stream, so a song does not depend on how many others are
    generated or in which order.
    """
    rng = np.random.default_rng([seed, index])
    mode = ("major", "minor")[rng.integers(2)]
    tempo_bpm = int(rng.integers(80, 151))
    bar_seconds = 4 * 60 / tempo_bpm
    target_seconds = rng.uniform(20.0, 30.0)
    family = sorted(CHORD_PROGRAMS)[rng.integers(len(CHORD_PROGRAMS))]
    spec = SongSpec(
        index=index,
        tonic=int(rng.integers(12)),
        mode=mode,
        tempo_bpm=tempo_bpm,
        progression=PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))],
        bars=max(4, round(target_seconds / bar_seconds)),
        programs={
            "bass": int(rng.choice(BASS_PROGRAMS)),
            "drums": int(rng.choice(DRUM_KITS)),
            "other": int(rng.choice(CHORD_PROGRAMS[family])),
            "vocals": int(rng.choice(VOCAL_PROGRAMS)),
        },
    )
    parts = {
        "bass": _bass_part(spec, rng),
        "drums": _drum_part(spec, rng),
        "other": _chord_part(spec, rng, family),
        "vocals": _vocal_part(spec, rng),
    }
    return Song(spec, parts)


def fit_length(audio: np.ndarray, length_samples: int) -> np.ndarray:
    """Trim or zero-pad ``[samples]`` audio to exactly ``length_samples``."""
    if len(audio) >= length_samples:
        return audio[:length_samples]
    return np.pad(audio, (0, length_samples - len(audio)))


def mix_stems(stems: dict[str, np.ndarray], peak: float = PEAK) -> dict[str, np.ndarray]:
    """Scale the stems by one common factor and add their exact sum as ``"mixture"``.

    Stems are float32 ``[samples]`` of equal length. The factor brings the loudest of the
    mixture and the stems to ``peak``, so nothing clips when written as PCM and the mixture
    is still the sample sum of the written stems.
    """
    lengths = {len(audio) for audio in stems.values()}
    if len(lengths) != 1:
        raise ValueError(f"stems differ in length: {sorted(lengths)}")
    stems = {name: np.asarray(audio, dtype=np.float32) for name, audio in stems.items()}
    loudest = max(
        np.abs(sum(stems.values())).max(), max(np.abs(audio).max() for audio in stems.values())
    )
    if loudest == 0:
        raise ValueError("all stems are silent")
    factor = np.float32(peak / loudest)
    scaled = {name: audio * factor for name, audio in stems.items()}
    scaled[MIXTURE] = np.sum(np.stack(list(scaled.values())), axis=0, dtype=np.float32)
    return scaled


def write_song(folder: Path, tracks: dict[str, np.ndarray]) -> None:
    """Write ``<name>.flac`` per track into ``folder``, which appears complete or not at all."""
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, audio in tracks.items():
            write_audio_atomic(staging / f"{name}.flac", audio, SAMPLE_RATE, STEM_SUBTYPE)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def render_part(
    instrument: pretty_midi.Instrument, tempo_bpm: int, soundfont: Path, work_dir: Path
) -> np.ndarray:
    """Render one instrument with the fluidsynth command; returns mono float32 ``[samples]``."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    midi.instruments.append(instrument)
    midi_path = work_dir / f"{instrument.name}.mid"
    wav_path = work_dir / f"{instrument.name}.wav"
    midi.write(str(midi_path))
    # Float output: no dither noise (so renders repeat exactly) and no clipping.
    command = [
        "fluidsynth",
        "-ni",
        "-q",
        "-g",
        str(FLUIDSYNTH_GAIN),
        "-O",
        "float",
        "-T",
        "wav",
        "-F",
        str(wav_path),
        "-r",
        str(SAMPLE_RATE),
        str(soundfont),
        str(midi_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wav_path.exists():
        raise LincaeError(f"fluidsynth failed on {instrument.name}: {result.stderr.strip()}")
    audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise LincaeError(f"fluidsynth rendered {rate} Hz instead of {SAMPLE_RATE} Hz")
    return to_mono(audio)


def song_split(index: int, valid_songs: int) -> str:
    """The first ``valid_songs`` songs are validation, so growing ``--songs`` keeps them."""
    return VALID if index < valid_songs else TRAIN


def song_folder_name(index: int) -> str:
    return f"song_{index:04d}"


@dataclass(frozen=True)
class RenderTask:
    seed: int
    index: int
    split: str
    output: Path
    soundfont: Path


def render_song(task: RenderTask) -> dict:
    """Render one song unless its folder exists; returns its manifest entry."""
    song = generate_song(task.seed, task.index)
    spec = song.spec
    folder = task.output / task.split / song_folder_name(task.index)
    status = "kept"
    if not folder.exists():
        length_samples = round((spec.music_seconds + TAIL_SECONDS) * SAMPLE_RATE)
        with tempfile.TemporaryDirectory(prefix="lincae-stems-") as work_dir:
            stems = {
                name: fit_length(
                    render_part(song.parts[name], spec.tempo_bpm, task.soundfont, Path(work_dir)),
                    length_samples,
                )
                for name in STEM_NAMES
            }
        silent = [name for name, audio in stems.items() if not np.any(audio)]
        if silent:
            raise LincaeError(f"song {task.index}: fluidsynth rendered silence for {silent}")
        write_song(folder, mix_stems(stems))
        status = "wrote"
    info = sf.info(folder / f"{MIXTURE}.flac")
    return {
        "status": status,
        "path": f"{task.split}/{folder.name}",
        "split": task.split,
        "seed": task.seed,
        "index": task.index,
        "key": spec.key_name,
        "tempo_bpm": spec.tempo_bpm,
        "progression": list(spec.progression),
        "bars": spec.bars,
        "programs": {
            name: {
                "program": program,
                "name": f"drum kit {program}"
                if name == "drums"
                else pretty_midi.program_to_instrument_name(program),
            }
            for name, program in spec.programs.items()
        },
        "duration_seconds": round(info.frames / info.samplerate, 3),
    }


def build_manifest(entries: Sequence[dict]) -> dict:
    """The manifest: one entry per song (keyed by relative folder) and totals per split."""
    songs = {
        entry["path"]: {k: v for k, v in entry.items() if k not in ("status", "path")}
        for entry in entries
    }
    totals: dict[str, dict[str, float]] = {
        "songs": {TRAIN: 0, VALID: 0},
        "hours": {TRAIN: 0.0, VALID: 0.0},
    }
    for entry in entries:
        totals["songs"][entry["split"]] += 1
        totals["hours"][entry["split"]] += entry["duration_seconds"] / 3600
    totals["hours"] = {split: round(hours, 3) for split, hours in totals["hours"].items()}
    return {
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "format": f"FLAC {STEM_SUBTYPE}",
        "stems": list(STEM_NAMES),
        "mixture": f"{MIXTURE}.flac is the sample sum of the stems",
        "soundfont": "FluidR3_GM.sf2 (fluid-soundfont-gm)",
        "songs": songs,
        "totals": totals,
    }


def render_stems(
    output: Path, songs: int, valid_songs: int, seed: int, soundfont: Path, workers: int
) -> dict:
    """Render every missing song, write ``manifest.json`` and return the manifest."""
    if shutil.which("fluidsynth") is None:
        raise LincaeError("fluidsynth not found: apt-get install -y fluidsynth")
    if not soundfont.is_file():
        raise LincaeError(f"soundfont {soundfont} not found: apt-get install -y fluid-soundfont-gm")
    if not 0 <= valid_songs <= songs:
        raise LincaeError(f"--valid must be between 0 and --songs ({songs}), not {valid_songs}")
    tasks = [
        RenderTask(seed, index, song_split(index, valid_songs), output, soundfont)
        for index in range(songs)
    ]
    entries = []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for done, entry in enumerate(pool.imap(render_song, tasks), start=1):
            print(f"[{done}/{songs}] {entry['status']} {entry['path']}", flush=True)
            entries.append(entry)
    manifest = build_manifest(entries)
    write_json_atomic(output / "manifest.json", manifest)
    return manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = recipe_parser(__spec__.name, __doc__, DEFAULT_OUTPUT)
    parser.add_argument(
        "--songs", type=int, default=150, help="number of songs in total (default: %(default)s)"
    )
    parser.add_argument(
        "--valid", type=int, default=20, help="how many of them go to valid/ (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--soundfont",
        type=Path,
        default=DEFAULT_SOUNDFONT,
        help="General MIDI soundfont (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        choices=range(1, MAX_WORKERS + 1),
        default=MAX_WORKERS,
        help="rendering processes (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = render_stems(
            args.output.expanduser(),
            args.songs,
            args.valid,
            args.seed,
            args.soundfont,
            args.workers,
        )
    except LincaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    songs, hours = manifest["totals"]["songs"], manifest["totals"]["hours"]
    print(
        f"{songs[TRAIN]} train songs ({hours[TRAIN]:.2f} h), {songs[VALID]} valid songs "
        f"({hours[VALID]:.2f} h) in {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
