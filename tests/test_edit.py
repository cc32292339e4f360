"""Editing in latent space (latents/edit.py, latents/timeline.py, `lincae trim/pad/fade/concat`).

The pure parts on synthetic latents; what decoding gives on the embedded model with the bundled
example (an 8-s song): exact lengths, content aligned (the envelope of the decoded audio lags
the original's by at most one STFT hop), fades as good as fading the audio and re-encoding.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lincae_cli.errors import LincaeError
from lincae_cli.eval.metrics import aligned, mss
from lincae_cli.latents import edit
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry, read_lat, write_lat
from lincae_cli.latents.timeline import (
    envelope_gain,
    fade_gain,
    parse_end,
    parse_envelope,
    parse_position,
)
from tests.conftest import run_lincae

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FRAMING = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}
H = 4096
HOP = 512


def framed(frames: int, seed: int = 0, channels: int = 1, **changes: object) -> LatentFile:
    latents = np.random.default_rng(seed).standard_normal((channels, 8, frames), np.float32)
    meta = LatentMeta(
        model_name="tiny-test",
        model_sha256="ab" * 32,
        scale_factor=1.0,
        model_sample_rate=44100,
        source_sample_rate=44100,
        num_samples=frames * H,
        channels=channels,
        latent_rate_hz=44100 / H,
        latent_hop_samples=H,
        chunking=dict(FRAMING),
        provenance=[provenance_entry("encode", input=f"in{seed}.wav")],
    )
    return LatentFile(latents, dataclasses.replace(meta, **changes))


def round_trip(lat: LatentFile) -> LatentFile:
    """Through the file format, whose reader checks the frame-count rule."""
    stream = io.BytesIO()
    write_lat(stream, lat, dtype="float32")
    stream.seek(0)
    return read_lat(stream)


# -- times as sox writes them ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12.5", 551250), ("1:02.5", 2756250), ("0:01:00", 2646000), ("441000s", 441000),
     ("-2", 44100 * 118), ("-100s", 44100 * 120 - 100), ("0", 0)],
)  # fmt: skip
def test_positions_parse_like_sox(text: str, expected: int) -> None:
    assert parse_position(text, 44100, 44100 * 120) == expected


def test_end_may_be_a_length_and_positions_stay_in_the_file() -> None:
    assert parse_end("+2.5", 1000, 44100, 10**6) == 1000 + 110250
    assert parse_end("-1", 0, 44100, 10**6) == 10**6 - 44100
    for bad in ("61", "-61", "abc", "1:2:3:4", "+1"):
        with pytest.raises(LincaeError):
            parse_position(bad, 44100, 44100 * 60)


def test_envelopes_and_fades_are_the_curves_asked_for() -> None:
    points = parse_envelope("0:0dB,5:-12dB,1:00:x0.5", lambda t: float(t.strip("dBx")))
    assert points == [(0.0, 0.0), (5.0, -12.0), (60.0, 0.5)]
    with pytest.raises(LincaeError, match="increase"):
        parse_envelope("5:0,1:0", float)
    gain = envelope_gain([(0.0, 0.0), (4.0, -12.0)])
    np.testing.assert_allclose(
        gain(np.array([-1.0, 2.0, 9.0])), 10 ** (np.array([0, -6, -12]) / 20)
    )
    fade = fade_gain(1.0, 2.0, 10.0, "linear")
    np.testing.assert_allclose(fade(np.array([-0.5, 0.5, 5.0, 9.0, 10.5])), [0, 0.5, 1, 0.5, 0])
    assert fade_gain(1.0, 0.0, 10.0, "cosine")(np.array([0.5]))[0] == pytest.approx(0.5)


# -- the arithmetic of frames and offsets ---------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"), [(0, 5 * H), (1, 3 * H), (H + 77, 9 * H + 5), (5000, 5001)]
)
def test_trim_keeps_whole_frames_and_records_the_offset(start: int, end: int) -> None:
    source = framed(12)
    trimmed = round_trip(edit.trim(source, start, end))
    first = start // H
    assert trimmed.meta.num_samples == end - start
    assert trimmed.meta.offset_samples == start - first * H
    assert np.array_equal(trimmed.latents, source.latents[..., first : first + trimmed.frames])
    # Trimming a trimmed file is trimming the original once.
    inner = (end - start) // 3
    again = edit.trim(trimmed, inner, end - start - inner)
    once = edit.trim(source, start + inner, end - inner)
    assert np.array_equal(again.latents, once.latents)
    assert again.meta.offset_samples == once.meta.offset_samples


def test_pad_prepends_silence_frames_and_keeps_the_content_in_place() -> None:
    source = framed(6)
    silence = np.full(8, 0.25, np.float32)
    padded = round_trip(edit.pad(source, 3 * H + 100, 2 * H, silence))
    assert padded.meta.num_samples == source.meta.num_samples + 5 * H + 100
    # The content's first sample is decoded sample offset + 3H + 100 = 4H: after four frames.
    assert padded.meta.offset_samples == H - 100
    assert np.array_equal(padded.latents[..., 4:10], source.latents)
    assert np.all(padded.latents[..., :4] == 0.25) and np.all(padded.latents[..., 10:] == 0.25)
    assert padded.meta.source_loudness_lufs == source.meta.source_loudness_lufs


def test_concat_of_frame_aligned_files_is_the_joined_latents() -> None:
    a, b = framed(5, seed=1), framed(7, seed=2)
    joined = round_trip(edit.concat([a, b], ["a", "b"]))
    assert np.array_equal(joined.latents, np.concatenate([a.latents, b.latents], axis=-1))
    assert joined.meta.num_samples == a.meta.num_samples + b.meta.num_samples
    inputs = joined.meta.provenance[0]["inputs"]
    assert [entry["position_samples"] for entry in inputs] == [0, 5 * H]


def test_concat_and_place_refuse_incompatible_files_in_one_line() -> None:
    """The library's own check, not a NumPy broadcast error: library callers get it too."""
    other_model = framed(5, seed=2, model_sha256="cd" * 32, model_name="other")
    stereo = framed(5, seed=3, channels=2)
    for second, words in [(other_model, "made by different models"), (stereo, "channels")]:
        with pytest.raises(LincaeError, match=words) as caught:
            edit.concat([framed(5, seed=1), second], ["a.lat", "b.lat"])
        assert "a.lat and b.lat are incompatible" in str(caught.value)
        with pytest.raises(LincaeError, match=words):
            edit.place([edit.Placed(framed(5), "a"), edit.Placed(second, "b", position=H)], "mix")


def test_a_crossfade_blends_latents_linearly_and_a_split_file_joins_back() -> None:
    a, b = framed(8, seed=1), framed(8, seed=2)
    crossed = edit.concat([a, b], ["a", "b"], crossfade=2 * H / 44100)
    assert crossed.frames == 14
    weights = (crossed.latents[..., 6:8] - b.latents[..., :2]) / (
        a.latents[..., 6:] - b.latents[..., :2]
    )
    # Frame k weighs the crossfade over the hop it owns, [k·H + 768, (k+1)·H + 768) (768 =
    # (n_fft - stft_hop) / 2): here a linear ramp from 6H to 8H.
    owned = np.arange(H)[:, None] + 768 + np.array([6 * H, 7 * H])[None, :]
    expected = 1 - np.clip((owned - 6 * H) / (2 * H), 0, 1).mean(axis=0)
    np.testing.assert_allclose(weights[0, 0], expected, atol=1e-3)
    whole = framed(10, seed=3)
    cut = 4 * H + 1000  # inside a frame: both sides keep it, the seam blends it with itself
    parts = [edit.trim(whole, 0, cut), edit.trim(whole, cut, whole.meta.num_samples)]
    rejoined = round_trip(edit.concat(parts, ["left", "right"]))
    np.testing.assert_allclose(rejoined.latents, whole.latents, rtol=1e-6)
    assert rejoined.meta.num_samples == whole.meta.num_samples


def test_place_lands_on_the_nearest_frame_and_says_where() -> None:
    a, b = framed(6, seed=1), framed(3, seed=2)
    placed = edit.place([edit.Placed(a, "a"), edit.Placed(b, "b", position=2 * H + 900)], "mix")
    assert [i["position_samples"] for i in placed.meta.provenance[0]["inputs"]] == [0, 2 * H]
    np.testing.assert_allclose(placed.latents[..., 2:5], a.latents[..., 2:5] + b.latents)


def test_affine_operations_are_exact_for_an_affine_encoder() -> None:
    """With b given: silence is b, and a fade is g·z + (1 - g)·b frame by frame."""
    b = np.linspace(-1, 1, 8, dtype=np.float32)
    source = framed(10)
    faded = edit.fade(source, 3 * H / 44100, 0.0, "linear", silence=b)
    plain = edit.fade(source, 3 * H / 44100, 0.0, "linear")
    gains = plain.latents[0, 0] / source.latents[0, 0]
    expected = plain.latents + (1 - gains)[None, None, :] * b[None, :, None]
    np.testing.assert_allclose(faded.latents, expected, atol=1e-6)
    assert edit.pad(source, H, 0, silence=b).latents[0, :, 0].tolist() == b.tolist()


def test_files_without_time_framing_are_refused() -> None:
    legacy = framed(4, chunking={})
    for operation in (
        lambda: edit.trim(legacy, 0, 10),
        lambda: edit.pad(legacy, 1, 1),
        lambda: edit.fade(legacy, 0.1, 0.0),
    ):
        with pytest.raises(LincaeError, match="re-encode"):
            operation()


# -- what decoding gives, on the embedded model -----------------------------------------------


def _envelope(audio: np.ndarray) -> np.ndarray:
    """RMS per STFT hop (512 samples), of a 2048-sample window."""
    power = np.convolve(audio.astype(np.float64) ** 2, np.ones(2048) / 2048, mode="same")
    return np.sqrt(power[::HOP])


def _lag_in_hops(decoded: np.ndarray, reference: np.ndarray, reach: int = 16) -> int:
    """The shift (in hops) that best aligns the envelopes; positive: ``decoded`` is late."""
    a, b = _envelope(decoded), _envelope(reference)
    n = min(len(a), len(b)) - 2 * reach
    scores = [
        np.corrcoef(a[reach + lag : reach + lag + n], b[reach : reach + n])[0, 1]
        for lag in range(-reach, reach + 1)
    ]
    return int(np.argmax(scores)) - reach


@pytest.fixture(scope="module")
def embedded():
    import lincae_cli

    model = lincae_cli.load_model(precision="fp32")
    audio, rate = sf.read(EXAMPLES / "song.flac", dtype="float32")
    lat = lincae_cli.encode_audio(model, audio, rate)

    def decode(latents: LatentFile) -> np.ndarray:
        return lincae_cli.decode_latents(model, latents)[0].reshape(-1)

    return model, audio, rate, lat, decode


def test_trims_decode_to_the_exact_length_aligned_with_the_original(embedded) -> None:
    _, audio, rate, lat, decode = embedded
    for start, end in [(10_000, 200_000), (2 * rate + 123, 7 * rate + 77)]:
        decoded = decode(edit.trim(lat, start, end))
        assert decoded.shape == (end - start,)
        assert abs(_lag_in_hops(decoded, audio[start:end])) <= 1
    padded = decode(edit.pad(lat, 30_000, 5_000))
    assert padded.shape == (len(audio) + 35_000,)
    assert abs(_lag_in_hops(padded[30_000 : 30_000 + len(audio)], audio)) <= 1


def test_concat_decodes_both_contents_in_order_without_a_click(embedded) -> None:
    _, audio, rate, lat, decode = embedded
    a, b = edit.trim(lat, 0, 3 * rate + 1234), edit.trim(lat, 5 * rate, 8 * rate)
    joined = edit.concat([a, b], ["a", "b"])
    seam = joined.meta.provenance[0]["inputs"][1]["position_samples"]
    assert abs(seam - a.meta.num_samples) <= H // 2
    decoded = decode(joined)
    assert decoded.shape == (joined.meta.num_samples,)
    assert abs(_lag_in_hops(decoded[:seam], audio[: 3 * rate + 1234])) <= 1
    assert abs(_lag_in_hops(decoded[seam:], audio[5 * rate :])) <= 1
    # A click is a burst of sample-to-sample change: at the seam it stays below the 95th
    # percentile of what the decoded music has elsewhere.
    change = np.diff(decoded) ** 2
    windows = [change[i : i + 1024].mean() for i in range(0, len(change) - 1024, 512)]
    assert change[seam - 512 : seam + 512].mean() <= np.percentile(windows, 95)


def _mss(decoded: np.ndarray, reference: torch.Tensor) -> float:
    return float(mss(*aligned(torch.from_numpy(decoded)[None], reference, 2048))[0])


@pytest.mark.parametrize("affine", [False, True])
def test_fades_in_latent_space_are_as_good_as_fading_the_audio(embedded, affine) -> None:
    """MSS(fade(x), Dec(fade(Enc x))) <= 1.10 x MSS(fade(x), Dec(Enc(fade x)))."""
    import lincae_cli

    model, audio, rate, lat, decode = embedded
    silence = np.asarray(lat.meta.silence_latent, np.float32) if affine else None
    times = np.arange(len(audio)) / rate
    cases = [
        (
            fade_gain(2.0, 3.0, len(audio) / rate, "linear"),
            edit.fade(lat, 2.0, 3.0, "linear", silence),
        ),
        (
            envelope_gain([(0, 0), (3, -12), (6, 0)]),
            edit.envelope(lat, [(0, 0), (3, -12), (6, 0)], silence),
        ),
    ]
    for curve, in_latent_space in cases:
        target = (audio * curve(times)).astype(np.float32)
        reencoded = decode(lincae_cli.encode_audio(model, target, rate))
        reference = torch.from_numpy(target)[None]

        assert _mss(decode(in_latent_space), reference) <= 1.10 * _mss(reencoded, reference)


# -- the commands ------------------------------------------------------------------------------


def test_edit_commands_never_import_torch(tmp_path: Path, embedded) -> None:
    """trim, pad, fade, concat, gain, mix and info on .lat files run on NumPy alone: no torch,
    no scipy, no audio libraries, no pydantic (Typer's value conversion), and no other
    command's module (commands load lazily)."""
    _, _, _, lat, _ = embedded
    song = tmp_path / "song.lat"
    write_lat(song, lat)
    steps = [
        ["trim", str(song), "1", "+2.5", "-o", str(tmp_path / "t.lat")],
        ["pad", str(tmp_path / "t.lat"), "--start", "0.5", "-o", str(tmp_path / "p.lat")],
        ["fade", str(tmp_path / "p.lat"), "--in", "1", "-o", str(tmp_path / "f.lat")],
        ["concat", str(tmp_path / "t.lat"), str(tmp_path / "f.lat"), "-o", str(tmp_path / "c.lat")],
        ["gain", str(song), "-3", "-o", str(tmp_path / "g.lat")],
        ["mix", str(song), str(tmp_path / "g.lat"), "-o", str(tmp_path / "m.lat")],
        ["gain", str(song), "--envelope", "0:0dB,2:-12dB", "-o", str(tmp_path / "e.lat")],
        ["subtract", str(tmp_path / "m.lat"), str(song), "-o", str(tmp_path / "s.lat")],
        ["info", str(tmp_path / "c.lat")],
    ]
    unwanted = ["torch", "scipy", "soundfile", "soxr", "pydantic", "lincae_cli.cli.encode"]
    unwanted += ["lincae_cli.cli.train", "lincae_cli.cli.eval", "lincae_cli.engine.inference"]
    script = (
        "import sys\nfrom lincae_cli.cli.app import main\ncode = main(sys.argv[1:])\n"
        f"imported = [name for name in {unwanted!r} if name in sys.modules]\n"
        "assert not imported, f'imported {imported}'\nsys.exit(code)\n"
    )
    import subprocess
    import sys

    for args in steps:
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True)
        assert done.returncode == 0, (args, done.stderr.decode())
    trimmed = read_lat(tmp_path / "t.lat")
    assert trimmed.meta.num_samples == round(2.5 * 44100)
    assert [e["op"] for e in trimmed.meta.provenance] == ["encode", "trim"]


def test_edit_errors_are_one_line(tmp_path: Path, embedded) -> None:
    _, _, _, lat, _ = embedded
    song = tmp_path / "song.lat"
    write_lat(song, lat)
    for args, words in [
        (["trim", str(song), "9"], "outside the file"),
        (["trim", str(song), "3", "2"], "before"),
        (["trim", str(song), "abc"], "not a time"),
        (["fade", str(song), "--in", "5", "--out", "5"], "do not fit"),
        (["fade", str(song), "--in", "1", "--shape", "square"], "shape"),
        (["concat", str(song)], "at least two"),
    ]:
        done = run_lincae([*args, "-o", str(tmp_path / "x.lat")])
        error = done.stderr.decode()
        assert done.returncode in (1, 2) and words in error and error.count("\n") == 1, error
        assert not (tmp_path / "x.lat").exists()


def test_affine_gain_mix_subtract_envelope_and_at_through_the_cli(tmp_path: Path) -> None:
    """The commands' --affine, --envelope and --at compute exactly the library's latents."""
    b = np.linspace(-0.5, 0.5, 8, dtype=np.float32)
    a_lat = framed(20, seed=1, silence_latent=b.tolist())
    b_lat = framed(20, seed=2, silence_latent=b.tolist())
    pa, pb = tmp_path / "a.lat", tmp_path / "b.lat"
    write_lat(pa, a_lat, dtype="float32")
    write_lat(pb, b_lat, dtype="float32")

    def run(*args: str) -> tuple[LatentFile, str]:
        out = tmp_path / "out.lat"
        done = run_lincae([*args, "-o", str(out), "--dtype", "float32", "-f"])
        assert done.returncode == 0, done.stderr.decode()
        return read_lat(out), done.stderr.decode()

    a, z2 = read_lat(pa).latents, read_lat(pb).latents
    column = b[None, :, None]
    gained, _ = run("gain", str(pa), "x0.5", "--affine")
    np.testing.assert_allclose(gained.latents, 0.5 * a + 0.5 * column, atol=1e-6)
    difference, _ = run("subtract", str(pa), str(pb), "--affine")
    np.testing.assert_allclose(difference.latents, a - z2 + column, atol=1e-6)
    summed, _ = run("mix", str(pa), str(pb), "--gains", "x1,x1", "--affine")
    np.testing.assert_allclose(summed.latents, a + z2 - column, atol=1e-6)
    plain, _ = run("mix", str(pa), str(pb))
    assert np.array_equal(plain.latents, a + z2)

    enveloped, _ = run("gain", str(pa), "--envelope", "0:0dB,2:-12dB,4:0dB")
    expected = edit.envelope(read_lat(pa), [(0.0, 0.0), (2.0, -12.0), (4.0, 0.0)])
    np.testing.assert_allclose(enveloped.latents, expected.latents, atol=1e-6)

    placed, warning = run("mix", str(pa), str(pb), "--at", f"0,{5 * H / 44100 + 0.01}")
    assert placed.frames == 25 and "nearest" in warning
    np.testing.assert_allclose(placed.latents[..., 5:20], a[..., 5:20] + z2[..., :15], atol=1e-6)
    assert [i["position_samples"] for i in placed.meta.provenance[0]["inputs"]] == [0, 5 * H]
