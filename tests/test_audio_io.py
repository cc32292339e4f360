"""Audio files in and out, resampling, peak helpers and loudness measurement."""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest
import soundfile

from lincae_cli.audio.io import (
    AUDIO_EXTENSIONS,
    audio_from_bytes,
    audio_to_bytes,
    clip_report,
    is_audio_path,
    normalize_peak,
    read_audio,
    resample,
    resampled_length,
    soft_limit,
    write_audio,
)
from lincae_cli.audio.loudness import integrated_loudness
from lincae_cli.errors import LincaeError
from lincae_cli.paths import is_lat_path


def sine(
    frequency_hz: float = 440.0,
    seconds: float = 0.5,
    sample_rate: int = 16000,
    channels: int = 2,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A float32 sine ``[channels, samples]``."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * frequency_hz * t)
    return np.tile(wave, (channels, 1)).astype(np.float32)


@pytest.fixture
def fake_stdio(monkeypatch):
    """Replace stdin/stdout with objects whose ``.buffer`` is a BytesIO."""

    def install(stdin_bytes: bytes = b"") -> io.BytesIO:
        stdout = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": stdout})())
        monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": io.BytesIO(stdin_bytes)})())
        return stdout

    return install


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".aiff"])
def test_lossless_round_trip(tmp_path, suffix):
    audio = sine()
    path = tmp_path / f"tone{suffix}"
    write_audio(path, audio, 16000, subtype="PCM_24")
    back, sample_rate = read_audio(path)
    assert sample_rate == 16000
    assert back.dtype == np.float32 and back.shape == audio.shape
    np.testing.assert_allclose(back, audio, atol=2**-22)
    assert list(tmp_path.iterdir()) == [path]


def test_float_wav_is_exact(tmp_path):
    audio = sine(channels=1) * 3.0
    path = tmp_path / "loud.wav"
    write_audio(path, audio, 16000, subtype="FLOAT")
    assert np.array_equal(read_audio(path)[0], audio)


def test_ogg_round_trip(tmp_path):
    path = tmp_path / "tone.ogg"
    write_audio(path, sine(), 16000)
    back, sample_rate = read_audio(path)
    assert sample_rate == 16000 and back.shape[0] == 2


def test_stdout_and_stdin(fake_stdio):
    audio = sine(channels=1)
    stdout = fake_stdio()
    write_audio("-", audio, 16000, subtype="FLOAT")
    assert stdout.getvalue()[:4] == b"RIFF"
    fake_stdio(stdout.getvalue())
    back, sample_rate = read_audio("-")
    assert sample_rate == 16000 and np.array_equal(back, audio)


def test_bytes_helpers():
    audio = sine()
    back, sample_rate = audio_from_bytes(audio_to_bytes(audio, 16000, "FLAC"))
    assert sample_rate == 16000 and back.shape == audio.shape


def test_missing_file(tmp_path):
    with pytest.raises(LincaeError, match="nothing.wav: no such file"):
        read_audio(tmp_path / "nothing.wav")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(LincaeError, match="is a directory"):
        read_audio(tmp_path)


@pytest.mark.parametrize(
    "data",
    [b"this is not audio at all" * 10, b"RIFF\x10\x00\x00\x00WAVEjunkjunk", b"\x00" * 200],
)
def test_corrupt_audio(tmp_path, data):
    path = tmp_path / "broken.wav"
    path.write_bytes(data)
    with pytest.raises(LincaeError, match="broken.wav: cannot read audio"):
        read_audio(path)


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    path.write_bytes(audio_to_bytes(sine(), 16000, "FLAC")[:30])
    with pytest.raises(LincaeError, match="cut.flac: "):
        read_audio(path)


def test_zero_length(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0, 2), np.float32), 16000)
    with pytest.raises(LincaeError, match=r"empty.wav: audio is empty \(0 samples\)"):
        read_audio(path)


def test_empty_stdin(fake_stdio):
    fake_stdio(b"")
    with pytest.raises(LincaeError, match="<stdin>: no audio data"):
        read_audio("-")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad_value):
    audio = sine(channels=1)
    audio[0, 100] = bad_value
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio.T, 16000, subtype="FLOAT")
    with pytest.raises(LincaeError, match="nan.wav: audio contains NaN or Inf"):
        read_audio(path)


def test_unknown_output_suffix(tmp_path):
    with pytest.raises(LincaeError, match=r"out.xyz: unknown audio file type '.xyz'"):
        write_audio(tmp_path / "out.xyz", sine(), 16000)


def test_unencodable_audio_names_the_file(tmp_path):
    with pytest.raises(LincaeError, match="out.wav: cannot encode"):
        write_audio(tmp_path / "out.wav", sine(), 16000, subtype="VORBIS")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_audio_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "out.wav", sine(), 16000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sample_rate_in", [8000, 48000, 96000])
@pytest.mark.parametrize("num_samples", [1, 4801, 9600])
def test_resample_length(sample_rate_in, num_samples):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, num_samples)).astype(np.float32)
    out = resample(audio, sample_rate_in, 44100)
    expected = int(np.floor(num_samples * 44100 / sample_rate_in + 0.5))
    assert out.shape == (2, expected) == (2, resampled_length(num_samples, sample_rate_in, 44100))
    assert out.dtype == np.float32


def test_resample_keeps_a_tone():
    out = resample(sine(1000.0, seconds=0.5, sample_rate=48000), 48000, 44100)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert np.argmax(spectrum) * 44100 / out.shape[1] == pytest.approx(1000.0, abs=3.0)
    assert resample(out, 44100, 44100) is out


def test_suffix_helpers():
    assert {".wav", ".flac", ".ogg", ".aiff"} <= AUDIO_EXTENSIONS.keys()
    assert is_audio_path("a/b/Song.WAV") and is_audio_path("x.flac")
    assert not is_audio_path("x.lat") and not is_audio_path("noext")
    assert is_lat_path("mix.lat") and is_lat_path("MIX.LAT") and not is_lat_path("mix.wav")


def test_clip_report_and_peak_helpers():
    audio = np.array([[0.5, -1.5, 1.0, 2.0]], np.float32)
    assert clip_report(audio) == (2.0, 2)
    normalized = normalize_peak(audio, target_peak_dbfs=-6.0)
    assert np.abs(normalized).max() == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    silence = np.zeros((1, 10), np.float32)
    assert normalize_peak(silence) is silence
    limited = soft_limit(audio, threshold=0.8)
    assert np.abs(limited).max() < 1.0
    assert limited[0, 0] == 0.5
    assert np.sign(limited[0, 1]) == -1


def test_integrated_loudness():
    tone = sine(1000.0, seconds=1.0, sample_rate=16000, channels=1, amplitude=0.5)
    loudness = integrated_loudness(tone, 16000)
    assert loudness is not None
    # Homogeneity: halving the amplitude lowers loudness by 20*log10(2) LU.
    assert integrated_loudness(tone * 0.5, 16000) == pytest.approx(loudness - 6.0206, abs=0.01)
    assert integrated_loudness(tone[:, :3000], 16000) is None
    assert integrated_loudness(np.zeros((2, 16000), np.float32), 16000) is None
