"""Tests of the data recipes' pure parts (no Debian packages, no rendering unless available)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pretty_midi = pytest.importorskip("pretty_midi")

try:
    from lincae_training.recipes import dataset_io, prepare_music, render_stems
except ModuleNotFoundError:  # not installed: import from the source tree (python -m pytest)
    from training.recipes import dataset_io, prepare_music, render_stems

split_for_name = dataset_io.split_for_name
to_mono = dataset_io.to_mono
write_json_atomic = dataset_io.write_json_atomic

SAMPLE_RATE = 44100


@pytest.fixture
def synthetic_stems() -> dict[str, np.ndarray]:
    """Four seeded one-second stems, loud enough that their sum would clip."""
    rng = np.random.default_rng(1234)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return {
        "bass": (0.8 * np.sin(2 * np.pi * 55 * t)).astype(np.float32),
        "drums": (0.5 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32),
        "other": (0.7 * np.sin(2 * np.pi * 440 * t * (1 + t))).astype(np.float32),
        "vocals": np.zeros(SAMPLE_RATE, dtype=np.float32),
    }


def test_split_is_deterministic_and_near_the_fraction() -> None:
    names = [f"pkg__track{i}.flac" for i in range(4000)]
    splits = [split_for_name(name, 0.05) for name in names]
    assert splits == [split_for_name(name, 0.05) for name in names]
    assert 0.035 < splits.count("valid") / len(names) < 0.065
    assert set(splits) == {"train", "valid"}
    assert split_for_name("a.flac", 0.0) == "train"
    assert split_for_name("a.flac", 1.0) == "valid"


def test_to_mono_averages_channels() -> None:
    stereo = np.stack([np.ones(8), -np.ones(8) * 0.5], axis=1)
    mono = to_mono(stereo)
    assert mono.shape == (8,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, 0.25)


def test_audio_files_are_picked_from_a_dpkg_listing() -> None:
    listing = "/.\n/usr/share/doc/x/copyright\n/usr/share/music/b.opus\n/usr/share/music/a.ogg\n"
    files = prepare_music.audio_files_in_listing(listing)
    assert files == [Path("/usr/share/music/a.ogg"), Path("/usr/share/music/b.opus")]


def test_plan_names_tracks_and_rejects_collisions() -> None:
    tracks = prepare_music.plan_tracks({"pkg": [Path("/m/a.ogg"), Path("/m/b.opus")]}, 0.05)
    assert [track.name for track in tracks] == ["pkg__a.flac", "pkg__b.flac"]
    assert all(track.relative_path == f"{track.split}/{track.name}" for track in tracks)
    with pytest.raises(prepare_music.LincaeError):
        prepare_music.plan_tracks({"pkg": [Path("/m/a.ogg"), Path("/n/a.opus")]}, 0.05)


def test_music_manifest_totals_hours_per_split() -> None:
    tracks = [
        prepare_music.Track(Path("/m/a.ogg"), "pkg", "pkg__a.flac", "train"),
        prepare_music.Track(Path("/m/b.ogg"), "pkg", "pkg__b.flac", "valid"),
    ]
    manifest = prepare_music.build_manifest(
        tracks, {"train/pkg__a.flac": 5400.0, "valid/pkg__b.flac": 1800.0}
    )
    assert manifest["totals"]["hours"] == {"train": 1.5, "valid": 0.5}
    assert manifest["files"]["valid/pkg__b.flac"]["source"] == "/m/b.ogg"


def test_convert_track_writes_mono_16_bit_at_44100(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    source = tmp_path / "tone.ogg"
    sf.write(source, 0.5 * stereo, 48000, format="OGG", subtype="VORBIS")
    destination = tmp_path / "out" / "pkg__tone.flac"
    prepare_music.convert_track(source, destination)
    info = sf.info(destination)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert abs(info.frames - SAMPLE_RATE) < 100
    assert [p.name for p in destination.parent.iterdir()] == ["pkg__tone.flac"]


def _notes(song: render_stems.Song) -> dict[str, list[tuple]]:
    return {
        name: [(n.pitch, n.start, n.end, n.velocity) for n in part.notes]
        for name, part in song.parts.items()
    }


def test_song_generator_is_deterministic_with_four_parts() -> None:
    first, again = render_stems.generate_song(7, 3), render_stems.generate_song(7, 3)
    assert first.spec == again.spec
    assert _notes(first) == _notes(again)
    assert _notes(first) != _notes(render_stems.generate_song(8, 3))
    assert tuple(first.parts) == render_stems.STEM_NAMES
    assert first.parts["drums"].is_drum
    assert first.spec.programs["vocals"] in render_stems.VOCAL_PROGRAMS


@pytest.mark.parametrize("index", range(12))
def test_songs_are_in_range_and_no_part_is_empty(index: int) -> None:
    song = render_stems.generate_song(0, index)
    assert 80 <= song.spec.tempo_bpm <= 150
    assert 18 <= song.spec.music_seconds <= 32
    for part in song.parts.values():
        assert part.notes
        assert all(0 <= n.start < n.end <= song.spec.music_seconds + 1e-6 for n in part.notes)
        assert all(0 <= n.pitch < 128 and 0 < n.velocity < 128 for n in part.notes)


def test_fit_length_trims_and_pads() -> None:
    audio = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(render_stems.fit_length(audio, 3), [0, 1, 2])
    np.testing.assert_array_equal(render_stems.fit_length(audio, 7), [0, 1, 2, 3, 4, 0, 0])


def test_mixture_is_the_sum_of_the_scaled_stems(synthetic_stems) -> None:
    tracks = render_stems.mix_stems(synthetic_stems)
    stems = [tracks[name] for name in render_stems.STEM_NAMES]
    np.testing.assert_array_equal(tracks["mixture"], np.sum(stems, axis=0, dtype=np.float32))
    assert max(np.abs(audio).max() for audio in tracks.values()) == pytest.approx(0.9)


def test_mix_rejects_unequal_or_silent_stems(synthetic_stems) -> None:
    with pytest.raises(ValueError):
        render_stems.mix_stems({**synthetic_stems, "bass": np.zeros(10, np.float32)})
    with pytest.raises(ValueError):
        render_stems.mix_stems({name: np.zeros(10, np.float32) for name in synthetic_stems})


def test_written_song_reads_back_with_mixture_equal_to_sum(tmp_path: Path, synthetic_stems) -> None:
    folder = tmp_path / "train" / "song_0000"
    render_stems.write_song(folder, render_stems.mix_stems(synthetic_stems))
    read = {
        name: sf.read(folder / f"{name}.flac", dtype="float64")[0]
        for name in (*render_stems.STEM_NAMES, "mixture")
    }
    stem_sum = sum(read[name] for name in render_stems.STEM_NAMES)
    assert np.abs(read["mixture"] - stem_sum).max() < 1e-4
    assert sorted(p.name for p in folder.parent.iterdir()) == ["song_0000"]


def test_json_is_written_atomically(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_rendered_song_sums_exactly(tmp_path: Path) -> None:
    if shutil.which("fluidsynth") is None or not render_stems.DEFAULT_SOUNDFONT.is_file():
        pytest.skip("needs the fluidsynth command and fluid-soundfont-gm")
    task = render_stems.RenderTask(0, 0, "valid", tmp_path, render_stems.DEFAULT_SOUNDFONT)
    entry = render_stems.render_song(task)
    folder = tmp_path / entry["path"]
    read = {
        name: sf.read(folder / f"{name}.flac", dtype="float64")[0]
        for name in (*render_stems.STEM_NAMES, "mixture")
    }
    assert len({len(audio) for audio in read.values()}) == 1
    assert all(np.abs(audio).max() > 1e-3 for audio in read.values())
    stem_sum = sum(read[name] for name in render_stems.STEM_NAMES)
    assert np.abs(read["mixture"] - stem_sum).max() < 1e-4
    assert render_stems.render_song(task)["status"] == "kept"


@pytest.mark.parametrize("recipe", [prepare_music, render_stems])
def test_recipe_usage_names_the_module_and_defaults_output(recipe, capsys) -> None:
    assert recipe.parse_args([]).output == recipe.DEFAULT_OUTPUT
    assert recipe.parse_args(["--output", "x"]).output == Path("x")
    with pytest.raises(SystemExit):
        recipe.parse_args(["--help"])
    assert f"usage: python -m {recipe.__name__}" in capsys.readouterr().out
