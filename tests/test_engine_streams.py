"""Block-by-block audio in and out (audio/sources.py, audio/sink.py, audio/loudness.py) and
torchrun sharding (engine/shard.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lincae_cli.audio.io import resample, resampled_length
from lincae_cli.audio.loudness import StreamingLoudness, integrated_loudness
from lincae_cli.audio.sink import AudioSink, OutputOptions
from lincae_cli.audio.sources import ArraySource, open_audio_source
from lincae_cli.engine.shard import ShardInfo, assign_shares, shard_info
from lincae_cli.errors import LincaeError
from tests.conftest import tone

# -- loudness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_rate", "channels", "seconds", "block"),
    [(44100, 1, 3.0, 65536), (48000, 2, 2.3, 1000), (8000, 5, 1.05, 777), (96000, 2, 0.41, 4096)],
)
def test_streaming_loudness_matches_pyloudnorm(
    sample_rate: int, channels: int, seconds: float, block: int
) -> None:
    audio = tone(seconds, sample_rate, channels)
    audio[:, : audio.shape[1] // 3] *= 0.05  # a quiet start exercises the gates
    meter = StreamingLoudness(sample_rate, channels)
    for start in range(0, audio.shape[1], block):
        meter.update(audio[:, start : start + block])
    expected = integrated_loudness(audio, sample_rate)
    assert expected is not None
    assert meter.result() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("blocks", [[1, 1, 5, 31, 32, 33, 64, 1000], [70000], [0, 2, 96]])
def test_biquads_equal_scipy_lfilter_block_by_block(blocks: list[int]) -> None:
    scipy_signal = pytest.importorskip("scipy.signal")
    from pyloudnorm.iirfilter import IIRfilter

    from lincae_cli.audio.biquad import high_pass, high_shelf

    rng = np.random.default_rng(0)
    signal = rng.standard_normal((2, sum(blocks))) * np.linspace(0.0, 3.0, sum(blocks))
    for ours, theirs in (
        (
            high_shelf(4.0, 2**-0.5, 1500.0, 44100),
            IIRfilter(4.0, 2**-0.5, 1500.0, 44100, "high_shelf"),
        ),
        (high_pass(0.5, 38.0, 22050), IIRfilter(0.0, 0.5, 38.0, 22050, "high_pass")),
    ):
        assert np.allclose(ours.b, theirs.b, rtol=1e-12)
        assert np.allclose((1.0, *ours.a), theirs.a, rtol=1e-12)
        expected = scipy_signal.lfilter(theirs.b, theirs.a, signal, axis=-1)
        state, parts, start = np.zeros((2, 4)), [], 0
        for size in blocks:
            part, state = ours.filter(signal[:, start : start + size], state)
            parts.append(part)
            start += size
        got = np.concatenate(parts, axis=1)
        assert np.abs(got - expected).max() <= 1e-9 * np.abs(expected).max()


def test_streaming_loudness_gives_none_where_pyloudnorm_cannot_measure() -> None:
    short = StreamingLoudness(44100, 1)
    short.update(tone(0.3))
    assert short.result() is None
    silent = StreamingLoudness(44100, 2)
    silent.update(np.zeros((2, 44100), np.float32))
    assert silent.result() is None
    many = StreamingLoudness(44100, 6)
    many.update(tone(1.0, channels=6))
    assert many.result() is None


# -- sources --------------------------------------------------------------------------------


def _collect(source: ArraySource, rate: int) -> np.ndarray:
    return np.concatenate(list(source.model_rate_blocks(rate)), axis=1)


@pytest.mark.parametrize("sample_rate", [8000, 44100, 48000, 96000])
def test_source_blocks_equal_whole_file_resampling(sample_rate: int) -> None:
    audio = tone(3.1, sample_rate, channels=2)
    source = ArraySource("x", audio, sample_rate)
    streamed = _collect(source, 44100)
    expected = resample(audio, sample_rate, 44100)
    assert streamed.shape == (2, resampled_length(audio.shape[1], sample_rate, 44100))
    np.testing.assert_allclose(streamed, expected, atol=1e-6)
    assert source.loudness_lufs == pytest.approx(integrated_loudness(audio, sample_rate))


def test_file_sources_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    soundfile.write(good, tone(0.5, 48000, 2).T, 48000)
    source = open_audio_source(good)
    assert (source.channels, source.sample_rate, source.num_samples) == (2, 48000, 24000)
    assert _collect(source, 44100).shape == (2, 22050)
    from_stdin = open_audio_source("-", good.read_bytes())
    assert from_stdin.name == "<stdin>" and from_stdin.num_samples == 24000

    (tmp_path / "garbage.wav").write_bytes(b"RIFF....WAVEfmt nonsense" * 10)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), np.float32), 44100)
    nan = tmp_path / "nan.wav"
    bad = tone(0.2)
    bad[0, 100] = np.nan
    soundfile.write(nan, bad.T, 44100, subtype="FLOAT")
    (tmp_path / "x.lat").write_bytes(b"not audio")
    cases = {
        tmp_path / "missing.wav": "no such file",
        tmp_path / "garbage.wav": "cannot read audio",
        empty: "empty",
        tmp_path: "is a directory",
        tmp_path / "x.lat": "is a latent file",
    }
    for path, reason in cases.items():
        with pytest.raises(LincaeError, match=reason) as error:
            open_audio_source(path)
        assert str(error.value).startswith(str(path))
    with pytest.raises(LincaeError, match="NaN or Inf"):
        _collect(open_audio_source(nan), 44100)
    with pytest.raises(LincaeError, match="empty input"):
        open_audio_source("-", b"")


# -- sinks ----------------------------------------------------------------------------------


def test_sink_resamples_trims_and_writes_as_it_goes(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    audio = tone(1.0, 44100, channels=2)
    length = resampled_length(audio.shape[1], 44100, 48000) - 5
    sink = AudioSink(target, 2, 44100, 48000, length, OutputOptions(subtype="FLOAT"))
    sink.write(audio[:, :30000])
    assert not target.exists()  # atomic: only a hidden partial file so far
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".out.")
    sink.write(audio[:, 30000:])
    report = sink.close()
    written, rate = soundfile.read(target, dtype="float32", always_2d=True)
    assert rate == 48000 and written.shape == (length, 2)
    np.testing.assert_allclose(written.T, resample(audio, 44100, 48000)[:, :length], atol=1e-5)
    assert report.clipped_samples == 0 and report.peak == pytest.approx(np.abs(written).max())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_sink_pads_short_input_and_reports_clipping() -> None:
    sink = AudioSink(None, 1, 44100, 44100, 1000, OutputOptions())
    sink.write(np.full((1, 600), 1.5, np.float32))
    report = sink.close()
    assert report.audio is not None and report.audio.shape == (1, 1000)
    assert report.audio[0, 600:].tolist() == [0.0] * 400
    assert report.clipped_samples == 600 and report.peak == 1.5


def test_sink_limit_and_normalize() -> None:
    loud = np.full((1, 100), 2.0, np.float32)
    limited = AudioSink(None, 1, 8000, 8000, 100, OutputOptions(limit=True))
    limited.write(loud)
    report = limited.close()
    assert report.clipped_samples == 0 and report.peak <= 1.0
    normalized = AudioSink(None, 1, 8000, 8000, 100, OutputOptions(normalize=True))
    normalized.write(loud)
    report = normalized.close()
    assert report.peak == pytest.approx(10 ** (-1 / 20), rel=1e-6)


def test_aborted_sink_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.flac"
    target.write_bytes(b"previous")
    sink = AudioSink(target, 1, 44100, 44100, 44100, OutputOptions())
    sink.write(tone(0.5))
    sink.abort()
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.flac"]


def test_sink_to_stdout_writes_wav_bytes(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = AudioSink("-", 2, 44100, 22050, 2205, OutputOptions())
    sink.write(tone(0.1, channels=2))
    sink.close()
    audio, rate = soundfile.read(io.BytesIO(capfdbinary.readouterr().out), always_2d=True)
    assert rate == 22050 and audio.shape == (2205, 2)


def test_unwritable_sink_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LincaeError, match="unknown audio file type"):
        AudioSink(tmp_path / "out.xyz", 1, 8000, 8000, 10, OutputOptions())
    sink = AudioSink(tmp_path / "out.wav", 1, 8000, 8000, 10, OutputOptions(subtype="NOPE"))
    with pytest.raises(LincaeError, match="out.wav: cannot write"):
        sink.write(np.zeros((1, 10), np.float32))
    assert list(tmp_path.iterdir()) == []


# -- sharding -------------------------------------------------------------------------------


def test_shard_info_from_torchrun_variables() -> None:
    assert shard_info({}) == ShardInfo()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert shard_info(env) == ShardInfo(3, 4, 1, 2)
    with pytest.raises(LincaeError, match="RANK and WORLD_SIZE"):
        shard_info({"RANK": "0"})
    with pytest.raises(LincaeError, match="inconsistent"):
        shard_info({"RANK": "4", "WORLD_SIZE": "4"})


def test_shards_partition_the_inputs_and_balance_their_cost() -> None:
    items = [f"f{i}" for i in range(11)]
    costs = [100, 1, 1, 1, 1, 1, 50, 50, 1, 1, 1]
    owners = assign_shares(costs, 3)
    shares = [[i for i, owner in zip(items, owners, strict=True) if owner == r] for r in range(3)]
    assert sorted(sum(shares, [])) == sorted(items)
    for share in shares:
        assert share == sorted(share, key=items.index)  # input order kept
    loads = [sum(costs[items.index(item)] for item in share) for share in shares]
    assert max(loads) == 100 and min(loads) >= 50
    assert assign_shares(costs, ShardInfo().world_size) == [0] * len(items)
