"""Level-true latents: the level metrics of `lincae eval` on a toy codec whose level compression
is known, and decoding that restores the loudness a `.lat` records (the sink, the engine, the
CLI, `info`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lincae_cli.audio.loudness import MAX_RESTORING_DB, integrated_loudness, restoring_gain
from lincae_cli.audio.sink import AudioSink, OutputOptions
from lincae_cli.engine.inference import Engine, EngineOptions, decode_to_array, encode_array
from lincae_cli.eval.level import (
    LEVEL_GAINS,
    KeptDecodes,
    loudness_lufs,
    power_sum_lufs,
    restore_helps,
    rms_db,
)
from lincae_cli.eval.linearity import evaluate
from lincae_cli.hub.download import resolve_model_file
from lincae_cli.hub.registry import REGISTRY, registered_restore_loudness
from lincae_cli.hub.store import load_model, read_model_metadata, save_model
from lincae_cli.latents import ops
from lincae_cli.latents.latfile import read_lat
from tests.conftest import make_tiny_model, tone
from tests.test_eval import STEMS, frame, unframe  # the toy codec's framing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 8000
SAMPLES = 8000  # 1 s: long enough for a BS.1770 loudness (0.4 s at least)
REFERENCE_DB = -20.0  # the level the toy decoder compresses towards


def compressing_unframe(latents: torch.Tensor) -> torch.Tensor:
    """An identity whose output level in dB is halfway between its input's and REFERENCE_DB
    (2:1 compression): each example is scaled by (RMS / reference)^(-1/2)."""
    audio = unframe(latents)
    rms = audio.double().pow(2).mean(-1, keepdim=True).sqrt()
    return (audio * (rms / 10 ** (REFERENCE_DB / 20)).rsqrt()).float()


@pytest.fixture(scope="module")
def signals() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clips `[3, samples]` at -6 to -36 dB, stems `[2, 3, samples]`, active `[2, 3]`)."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(SAMPLES) / RATE
    clips = torch.stack(
        [
            0.7 * torch.sin(2 * math.pi * 440 * t),
            0.02 * torch.randn(SAMPLES, generator=generator),
            0.2 * torch.sin(2 * math.pi * (200 + 600 * t) * t),
        ]
    )
    stems = torch.stack(
        [
            torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (110, 330, 990)]),
            0.05 * torch.randn(3, SAMPLES, generator=generator),
        ]
    )
    return clips, stems, torch.ones(2, 3, dtype=torch.bool)


def test_the_metrics_measure_a_known_level_compression(signals) -> None:
    clips, stems, active = signals
    metrics, _ = evaluate(
        frame, compressing_unframe, clips, stems, active, STEMS, sample_rate=RATE, margin=0
    )
    everything = torch.cat((clips, stems.sum(1)))
    errors = (REFERENCE_DB - rms_db(everything)) / 2  # what 2:1 compression does to each level
    assert metrics["level_recon_rms_db"] == pytest.approx(float(errors.mean()), abs=1e-3)
    worst = float(errors[errors.abs().argmax()])  # the quiet noise: 7 dB too loud
    assert metrics["level_recon_rms_db_worst"] == pytest.approx(worst, abs=1e-3)
    # The output is a scaled copy of the input, so its loudness moves by as many dB.
    assert metrics["level_recon_loudness_db"] == pytest.approx(float(errors.mean()), abs=1e-3)
    for gain in LEVEL_GAINS:  # half of every requested change is lost
        expected = -10 * math.log10(gain)
        assert metrics[f"level_gain_db_a{gain:g}"] == pytest.approx(expected, abs=1e-3)
    mixes = (REFERENCE_DB - rms_db(stems.sum(1))) / 2
    assert metrics["level_mix_db_stems"] == pytest.approx(float(mixes.mean()), abs=1e-3)

    # Restored, every output is scaled to the loudness its .lat would record: the copy is exact.
    for key in ("level_recon_rms_db", "level_recon_loudness_db_worst"):
        assert abs(metrics[f"restored_{key}"]) < 1e-3, key
    for gain in LEVEL_GAINS:
        assert abs(metrics[f"restored_level_gain_db_a{gain:g}"]) < 1e-3, gain
    assert metrics["restored_recon_mss"] < 1e-3 < metrics["recon_mss"]
    # Sines of different frequencies are uncorrelated: the power sum of their loudness is close.
    assert abs(metrics["restored_level_mix_db_stems"]) < 0.5 < abs(metrics["level_mix_db_stems"])
    assert restore_helps(metrics) is True


def test_an_identity_is_level_true_and_needs_no_restoring(signals) -> None:
    clips, stems, active = signals
    metrics, _ = evaluate(frame, unframe, clips, stems, active, STEMS, sample_rate=RATE)
    for key, value in metrics.items():
        if "level_" in key and key != "restored_level_mix_db_stems":  # that one is an estimate
            assert abs(value) < 1e-3, key
    assert restore_helps(metrics) is False  # nothing to gain: off


def test_kept_decodes_are_not_decoded_again() -> None:
    calls = []

    def decode(latents: torch.Tensor) -> torch.Tensor:
        calls.append(latents.shape)
        return unframe(latents)

    kept = KeptDecodes(decode)
    latents = frame(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)))
    first = kept.keep(0.5 * latents)
    assert torch.equal(kept(0.5 * latents), first) and len(calls) == 1
    kept(0.25 * latents)  # other latents: decoded
    assert len(calls) == 2


def test_loudness_helpers() -> None:
    assert restoring_gain(-20.0, -14.0) == pytest.approx(10 ** (6 / 20))
    assert restoring_gain(None, -14.0) == restoring_gain(-20.0, None) == 1.0
    assert restoring_gain(-90.0, 0.0) == pytest.approx(10 ** (MAX_RESTORING_DB / 20))
    both = power_sum_lufs(torch.tensor([[-20.0, -20.0], [-20.0, math.nan]]))
    assert both[0] == pytest.approx(-20 + 10 * math.log10(2)) and both[1] == pytest.approx(-20)
    silent = loudness_lufs(torch.zeros(1, SAMPLES), RATE)
    assert math.isnan(float(silent[0]))


# -- decoding: the sink ---------------------------------------------------------------------


def _sink_output(tmp_path: Path, target: str, quiet: np.ndarray, **options) -> tuple:
    """Feed `quiet` to a sink in uneven blocks; (audio written, report)."""
    path = None if target == "memory" else tmp_path / "out.wav"
    channels, length = quiet.shape
    sink = AudioSink(
        path,
        channels,
        44100,
        44100,
        length,
        OutputOptions(subtype="FLOAT", **options.pop("output", {})),
        **options,
    )
    for block in np.array_split(quiet, [1000, 5000, 20000, 50000], axis=1):
        sink.write(block)
    report = sink.close()
    if path is None:
        return report.audio, report
    audio, _ = soundfile.read(path, dtype="float32", always_2d=True)
    return audio.T, report


@pytest.mark.parametrize("target", ["memory", "file"])
def test_the_sink_restores_a_loudness_the_decoder_missed(tmp_path: Path, target: str) -> None:
    original = tone(2.0, channels=2)
    recorded = integrated_loudness(original, 44100)
    quiet = original * np.float32(0.25)  # a decoder 12 dB too quiet
    audio, report = _sink_output(tmp_path, target, quiet, target_lufs=recorded)
    np.testing.assert_allclose(audio, original, atol=1e-5)
    assert report.loudness_gain_db == pytest.approx(20 * math.log10(4), abs=1e-3)
    assert list(tmp_path.iterdir()) == ([tmp_path / "out.wav"] if target == "file" else [])

    unchanged, report = _sink_output(tmp_path, target, quiet, target_lufs=None)
    np.testing.assert_array_equal(unchanged, quiet)
    assert report.loudness_gain_db is None


def test_the_limiter_sees_the_restored_level(tmp_path: Path) -> None:
    original = 4 * tone(1.0)  # peaks above 1: restored, they must be limited
    quiet = original * np.float32(0.1)
    recorded = integrated_loudness(original, 44100)
    clipping, report = _sink_output(tmp_path, "file", quiet, target_lufs=recorded)
    assert np.abs(clipping).max() > 1.1 and report.clipped_samples > 0
    options = {"output": {"limit": True}, "target_lufs": recorded}
    audio, report = _sink_output(tmp_path, "file", quiet, **options)
    assert 0.9 < np.abs(audio).max() < 1.0  # limited after the gain, not before it
    assert report.clipped_samples == 0
    normalized, report = _sink_output(tmp_path, "memory", quiet, output={"normalize": True})
    assert report.loudness_gain_db is None  # --normalize sets the level itself
    assert np.abs(normalized).max() == pytest.approx(10 ** (-1 / 20), abs=1e-4)


def test_an_aborted_restoring_sink_leaves_nothing(tmp_path: Path) -> None:
    sink = AudioSink(tmp_path / "out.wav", 1, 44100, 44100, 44100, OutputOptions(), 0, -20.0)
    sink.write(tone(0.5))
    sink.abort()
    assert list(tmp_path.iterdir()) == []


# -- decoding: the engine, model defaults, the CLI ------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(make_tiny_model(0), EngineOptions(precision="fp32", chunk_seconds=0.5))


def _lufs(audio: np.ndarray) -> float:
    value = integrated_loudness(audio, 44100)
    assert value is not None
    return value


def test_decoding_restores_the_recorded_loudness(engine: Engine) -> None:
    # The tiny random model decodes at about -40 LUFS whatever it is given: 9 dB off here.
    lat = encode_array(engine, 0.1 * tone(1.5, channels=2), 44100, "tone")
    recorded = lat.meta.source_loudness_lufs
    assert recorded is not None and not engine.restores_loudness  # a model file says nothing
    own, _ = decode_to_array(engine, lat)
    restored, _ = decode_to_array(engine, lat, OutputOptions(restore_loudness=True))
    assert abs(_lufs(own) - recorded) > 1.0  # the random model's own level is off
    assert _lufs(restored) == pytest.approx(recorded, abs=0.05)
    gain = 10 ** ((_lufs(restored) - _lufs(own)) / 20)  # one gain over the whole output
    np.testing.assert_allclose(restored, gain * own, rtol=1e-3, atol=1e-7)

    louder = ops.gain(lat, ops.gain_for_target_lufs(recorded, -24.0))  # gain --lufs -24
    decoded, _ = decode_to_array(engine, louder, OutputOptions(restore_loudness=True))
    assert _lufs(decoded) == pytest.approx(-24.0, abs=0.05)

    # Two inputs that start and end together: the power sum of their loudness, an estimate
    # (these two correlate, so the true sum is 2.6 dB louder: restoring lands on the record).
    mixed = ops.mix([lat, ops.gain(lat, 0.5)])
    expected = recorded + 10 * math.log10(1.25)
    assert mixed.meta.source_loudness_lufs == pytest.approx(expected)
    decoded, _ = decode_to_array(engine, mixed, OutputOptions(restore_loudness=True))
    assert _lufs(decoded) == pytest.approx(expected, abs=0.05)

    difference = ops.subtract(lat, [ops.gain(lat, 0.5)])  # unknown loudness: left as decoded
    assert difference.meta.source_loudness_lufs is None
    plain, _ = decode_to_array(engine, difference)
    kept, _ = decode_to_array(engine, difference, OutputOptions(restore_loudness=True))
    np.testing.assert_array_equal(kept, plain)


def test_the_default_comes_from_the_model_file_or_the_registry(tmp_path: Path) -> None:
    path = save_model(make_tiny_model(0), tmp_path / "m.safetensors", "m", restore_loudness=True)
    model = load_model(path)
    assert model.restore_loudness is True and Engine(model).restores_loudness
    assert load_model(save_model(model, tmp_path / "n.safetensors", "n")).restore_loudness
    for name in ("lincae-small", "m2l-small"):  # the shipped files record nothing: the registry
        source = REGISTRY[name]
        (digest,) = source.sha256.values()
        assert registered_restore_loudness(name, digest) is source.restore_loudness
        assert source.restore_loudness is not None  # measured (docs/metrics.md, Level)
        shipped = resolve_model_file(name)
        assert read_model_metadata(shipped)["restore_loudness"] is None
        assert load_model(shipped).restore_loudness is source.restore_loudness
    assert registered_restore_loudness("lincae-small", "0" * 64) is None


def test_the_cli_flag_and_info(cli, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, 0.1 * tone(1.5).T, 44100)
    lat = tmp_path / "tone.lat"
    assert cli("encode", str(wav), "-o", str(lat), model=True).exit_code == 0
    recorded = read_lat(lat).meta.source_loudness_lufs
    outputs = {}
    for flag in ("--restore-loudness", "--no-restore-loudness"):
        out = tmp_path / f"{flag}.wav"
        result = cli("decode", str(lat), "-o", str(out), flag, "--subtype", "FLOAT", model=True)
        assert result.exit_code == 0, result.stderr
        outputs[flag] = _lufs(soundfile.read(out, always_2d=True)[0].T)
    assert outputs["--restore-loudness"] == pytest.approx(recorded, abs=0.05)
    assert abs(outputs["--no-restore-loudness"] - recorded) > 1.0

    refused = cli("gain", str(lat), "-6", "-o", str(tmp_path / "g.lat"), "--restore-loudness")
    assert refused.exit_code == 1 and "--restore-loudness only apply" in refused.stderr

    shown = cli("info", str(lat))
    assert "decoded level" in shown.stdout and "if the model file says so" in shown.stdout
    difference = tmp_path / "difference.lat"
    assert cli("subtract", str(lat), str(lat), "-o", str(difference)).exit_code == 0
    assert "no loudness recorded" in cli("info", str(difference)).stdout


def test_a_join_records_no_loudness(engine: Engine) -> None:
    from lincae_cli.latents import edit

    quiet = encode_array(engine, 0.1 * tone(1.0), 44100, "quiet")
    loud = encode_array(engine, tone(1.0), 44100, "loud")
    joined = edit.concat([loud, quiet], ["loud", "quiet"])
    assert joined.meta.source_loudness_lufs is None  # not the first file's
