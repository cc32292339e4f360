"""The training pack (training/recipes/pack.py), crops cut on the device (DeviceCropSampler),
and a tiny dry run of benchmarks/gpu_train_run.sh on the CPU."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lincae_training.data import AudioStore, CropSampler, DeviceCropSampler
from lincae_training.recipes import opus, pack

from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import load_model

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
# Small enough for seconds of encoding, long enough for the tiny preset's 16-frame crops.
SMALL = pack.PackSettings(
    music_seconds=1.0,
    piece_seconds=0.5,
    stem_seconds=0.6,
    valid_music_seconds=0.5,
    valid_songs=1,
    max_mib=1.0,
)


def _sound(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    tone = 0.2 * np.sin(2 * np.pi * (110 + 55 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    return tone.astype(np.float32)


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both recipes' layouts in miniature: music tracks and songs of four stems plus mixture."""
    root = tmp_path_factory.mktemp("data")
    tracks = {"music/train/a.flac": 2.0, "music/train/b.flac": 0.7, "music/valid/c.flac": 1.0}
    for seed, (path, seconds) in enumerate(tracks.items()):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / path, _sound(seconds, seed), RATE, subtype="PCM_16")
    for seed, song in enumerate(["train/song_0002", "train/song_0003", "valid/song_0000"]):
        stems = {name: _sound(1.2, 10 + 4 * seed + k) for k, name in enumerate(pack.STEMS)}
        folder = root / "stems" / song
        folder.mkdir(parents=True)
        for name, audio in {**stems, "mixture": sum(stems.values())}.items():
            sf.write(folder / f"{name}.flac", audio, RATE, subtype="PCM_24")
    return root


@pytest.fixture(scope="module")
def built(recipe_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("packs") / "pack"
    pack.build_pack(recipe_data, output, SMALL, workers=1)
    return output


def test_ogg_checksum_matches_libsndfile() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _sound(0.5, 0), 48000, format="OGG", subtype="OPUS")
    page = bytearray(buffer.getvalue())
    end = 27 + page[26] + sum(page[27 : 27 + page[26]])
    stored = int.from_bytes(page[22:26], "little")
    page[22:26] = bytes(4)
    assert opus.ogg_crc(bytes(page[:end])) == stored


def test_plan_spreads_pieces_and_keeps_a_song_window() -> None:
    durations = {
        "music/train/long.flac": 100 * RATE,
        "music/train/short.flac": RATE,
        "music/valid/v.flac": 50 * RATE,
        "stems/train/song_0001/bass.flac": 30 * RATE,
        "stems/train/song_0001/mixture.flac": 30 * RATE,
        "stems/valid/song_0000/bass.flac": 30 * RATE,
        "stems/valid/song_0005/bass.flac": 30 * RATE,
    }
    settings = pack.PackSettings(music_seconds=40, piece_seconds=10, stem_seconds=8, valid_songs=1)
    plan = {e.path: e for e in pack.plan_pack(durations, settings)}
    long = [plan[f"music/train/long__p{k}.opus"] for k in range(4)]
    assert [e.start for e in long] == [round(s * RATE) for s in (7.5, 32.5, 57.5, 82.5)]
    assert plan["music/train/short__p0.opus"].frames == RATE  # a whole short track, once
    assert plan["music/valid/v__p0.opus"].frames == 8 * RATE
    assert plan["stems/train/song_0001/bass.opus"].start == 11 * RATE
    assert "stems/valid/song_0005/bass.opus" not in plan  # beyond valid_songs
    assert not any("mixture" in path for path in plan)  # rebuilt from the stems instead


def test_pack_rebuilds_to_the_same_bytes(recipe_data: Path, built: Path, tmp_path: Path) -> None:
    again = pack.build_pack(recipe_data, tmp_path / "again", SMALL, workers=2)
    first = json.loads((built / pack.MANIFEST).read_text())
    assert again["pack_sha256"] == first["pack_sha256"]
    for entry in first["files"]:
        assert (tmp_path / "again" / entry["path"]).read_bytes() == (
            built / entry["path"]
        ).read_bytes()
    assert (tmp_path / "again" / pack.MANIFEST).read_bytes() == (built / pack.MANIFEST).read_bytes()


def test_unpack_gives_the_built_audio_and_mixtures(built: Path, tmp_path: Path) -> None:
    report = pack.unpack(built, tmp_path / "data", workers=2)
    manifest = json.loads((built / pack.MANIFEST).read_text())
    assert report["files"] == len(manifest["files"]) + len(manifest["mixtures"]) == 19
    assert report["identical"] == report["files"]
    song = tmp_path / "data" / "stems" / "train" / "song_0002"
    stems = sum(sf.read(song / f"{name}.wav", dtype="int16")[0].astype(int) for name in pack.STEMS)
    mixture = sf.read(song / "mixture.wav", dtype="int16")[0]
    assert np.abs(mixture - stems).max() <= 2  # sums of rounded stems vs the rounded sum
    assert sf.info(song / "bass.wav").samplerate == RATE


def test_unpack_refuses_a_damaged_pack(built: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in built.rglob("*"):
        if path.is_file():
            (damaged / path.relative_to(built)).parent.mkdir(parents=True, exist_ok=True)
            (damaged / path.relative_to(built)).write_bytes(path.read_bytes())
    victim = damaged / "music" / "train" / "a__p0.opus"
    victim.write_bytes(victim.read_bytes()[:-10] + bytes(10))
    with pytest.raises(LincaeError, match="damaged"):
        pack.unpack(damaged, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_a_pack_over_budget_fails_and_writes_nothing(recipe_data: Path, tmp_path: Path) -> None:
    tight = pack.PackSettings(**{**SMALL.__dict__, "max_mib": 0.001})
    with pytest.raises(LincaeError, match="max-mib"):
        pack.build_pack(recipe_data, tmp_path / "pack", tight, workers=1)
    assert list(tmp_path.iterdir()) == []


def _store(silent_samples: int) -> AudioStore:
    """Three clips (int16): loud, silent, loud."""
    loud = (np.sin(np.arange(4000) / 5.0) * 16000).astype(np.int16)
    audio = np.concatenate([loud, np.zeros(silent_samples, np.int16), loud[::-1]])
    offsets = np.cumsum([0, 4000, silent_samples, 4000])
    return AudioStore(audio, offsets, ["a", "silent", "b"])


def test_device_crops_are_repeatable_slices_of_one_clip() -> None:
    store = _store(1100)
    sampler = DeviceCropSampler(CropSampler(store, 1000, 0.01, seed=3), "cpu")
    batch = sampler.batch(5, range(0, 64))
    assert batch.shape == (64, 1000) and batch.dtype == torch.float32
    assert torch.equal(batch, sampler.batch(5, range(0, 64)))
    assert not torch.equal(batch, sampler.batch(6, range(0, 64)))
    assert not torch.equal(batch[32:], sampler.batch(5, range(32, 64)))  # another rank's share
    audio = torch.from_numpy(store.audio.astype(np.float32) / 32767.0)
    windows = audio.unfold(0, 1000, 1)  # every crop position
    clip_of = np.searchsorted(store.offsets, np.arange(store.total_samples), side="right") - 1
    for crop in batch:
        start = int((windows == crop).all(dim=1).nonzero()[0])
        assert clip_of[start] == clip_of[start + 999] != 1  # one loud clip


@pytest.mark.parametrize(("threshold", "low", "high"), [(0.0, 0.25, 0.42), (0.01, 0.0, 0.04)])
def test_device_crops_redraw_silent_ones(threshold: float, low: float, high: float) -> None:
    """Clips weighted by usable length (a third each here); with a threshold a crop is silent
    only when all 4 candidates are, (1/3)^4 = 1.2 %."""
    sampler = DeviceCropSampler(CropSampler(_store(4000), 3001, threshold, seed=0), "cpu")
    crops = sampler.batch(0, range(0, 2000))
    silent = float((crops.abs().amax(dim=1) == 0).float().mean())
    assert low < silent < high


@pytest.mark.skipif(sys.platform != "linux", reason="bash, coreutils timeout")
def test_gpu_train_run_dry_run_at_tiny_scale(built: Path, tmp_path: Path) -> None:
    """The loan's script end to end on the CPU: unpack, timing steps, plan, both trainings,
    exports, at most 8 result files."""
    results = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    script = ROOT / "benchmarks" / "gpu_train_run.sh"
    args = ["--scale", "tiny", "--pack", str(built), "--work", str(tmp_path / "work")]
    done = subprocess.run(
        ["bash", str(script), str(results), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p.name for p in results.iterdir())
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in results.iterdir())
    for name in ("lincae-gpu", "m2l-gpu"):
        model = load_model(results / f"{name}.safetensors")
        assert model.config.base_channels == 8  # the tiny preset
        records = [json.loads(line) for line in (results / f"{name}.metrics.jsonl").open()]
        assert [r["step"] for r in records if r["kind"] == "train"][-1] == 4
        assert any(r["kind"] == "valid" for r in records)
    log = (results / "run.log").read_text()
    assert "plan:" in log and "4 steps" in log
    assert "skipped at --scale tiny" in (results / "gpu-checks.log").read_text()
