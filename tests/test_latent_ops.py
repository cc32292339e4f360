"""Latent arithmetic: mix, gain, subtract, gain parsing and loudness bookkeeping."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lincae_cli.errors import LincaeError
from lincae_cli.latents.compat import check_compatible
from lincae_cli.latents.latfile import LatentFile, LatentMeta, lat_from_bytes, lat_to_bytes
from lincae_cli.latents.ops import (
    db_to_linear,
    gain,
    gain_for_target_lufs,
    linear_to_db,
    mix,
    parse_gain,
    subtract,
    upmix_to_stereo,
)


def make_lat(
    frames: int = 8,
    seed: int = 0,
    channels: int = 2,
    latent_channels: int = 4,
    loudness: float | None = -20.0,
    **meta_changes,
) -> LatentFile:
    generator = torch.Generator().manual_seed(seed)
    meta = LatentMeta(
        model_name="tiny-test",
        model_sha256="cd" * 32,
        scale_factor=1.0,
        model_sample_rate=44100,
        source_sample_rate=44100,
        num_samples=frames * 1024,
        channels=channels,
        latent_rate_hz=44100 / 1024,
        latent_hop_samples=1024,
        source_loudness_lufs=loudness,
        provenance=[{"op": "encode", "input": f"in{seed}.wav"}],
    )
    meta = dataclasses.replace(meta, **meta_changes)
    latents = torch.randn(channels, latent_channels, frames, generator=generator)
    return LatentFile(latents=latents, meta=meta)


def test_mix_is_exact_sum():
    a, b = make_lat(seed=1), make_lat(seed=2)
    mixed = mix([a, b])
    assert mixed.latents.dtype == np.float32
    assert np.array_equal(mixed.latents, a.latents + b.latents)


def test_mix_with_gains():
    a, b = make_lat(seed=1), make_lat(seed=2)
    mixed = mix([a, b], [0.5, 2.0])
    assert np.allclose(mixed.latents, 0.5 * a.latents + 2.0 * b.latents)


def test_gain_minus_6db():
    a = make_lat()
    scaled = gain(a, parse_gain("-6dB"))
    assert np.array_equal(scaled.latents, a.latents * 10 ** (-6 / 20))


def test_subtract_is_mix_with_minus_one():
    a, b, c = make_lat(seed=1), make_lat(seed=2), make_lat(seed=3)
    assert np.array_equal(subtract(a, [b, c]).latents, mix([a, b, c], [1, -1, -1]).latents)
    assert np.array_equal(subtract(mix([a, b]), [b]).latents, (a.latents + b.latents) - b.latents)


def test_different_lengths_need_pad():
    a, b = make_lat(frames=8, seed=1), make_lat(frames=5, seed=2)
    with pytest.raises(LincaeError, match=r"different lengths \(a.lat: 8, b.lat: 5 frames\)"):
        mix([a, b], names=["a.lat", "b.lat"])
    padded = mix([a, b], pad=True)
    assert padded.frames == 8
    assert np.array_equal(padded.latents[..., :5], a.latents[..., :5] + b.latents)
    assert np.array_equal(padded.latents[..., 5:], a.latents[..., 5:])
    assert padded.meta.num_samples == max(a.meta.num_samples, b.meta.num_samples)


def test_mixed_source_rates_measured_at_model_rate():
    a = make_lat(seed=1, source_sample_rate=48000, num_samples=48000)
    b = make_lat(seed=2, source_sample_rate=22050, num_samples=11025)
    mixed = mix([a, b])
    assert mixed.meta.source_sample_rate == 44100
    assert mixed.meta.num_samples == 44100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_sha256": "ef" * 32, "model_name": "other"}, "different models .*other"),
        ({"model_sample_rate": 48000, "latent_rate_hz": 48000 / 1024}, "model_sample_rate"),
        ({"latent_hop_samples": 512, "latent_rate_hz": 44100 / 512}, "latent_hop_samples"),
        ({"scale_factor": 2.0}, "scale_factor differs"),
    ],
)
def test_incompatible_metadata_named(change, message):
    a, b = make_lat(seed=1), make_lat(seed=2, **change)
    with pytest.raises(LincaeError, match=f"a.lat and b.lat are incompatible.*{message}"):
        check_compatible(a, b, "a.lat", "b.lat")
    with pytest.raises(LincaeError, match=message):
        mix([a, b])


def test_incompatible_shapes_named():
    mono = make_lat(channels=1)
    with pytest.raises(LincaeError, match=r"channels differs \(x: 2, y: 1\)"):
        check_compatible(make_lat(), mono, "x", "y")
    wide = make_lat(latent_channels=6)
    with pytest.raises(LincaeError, match=r"latent_channels differs \(x: 4, y: 6\)"):
        check_compatible(make_lat(), wide, "x", "y")


def test_empty_mix():
    with pytest.raises(LincaeError, match="at least one"):
        mix([])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-6dB", 10 ** (-6 / 20)),
        ("+3dB", 10 ** (3 / 20)),
        ("-6 db", 10 ** (-6 / 20)),
        ("0dB", 1.0),
        ("-6", 10 ** (-6 / 20)),  # a bare number is dB, as in sox's gain
        ("0.5", 10 ** (0.5 / 20)),
        (".25", 10 ** (0.25 / 20)),
        ("1e1", 10 ** (10 / 20)),
        ("-inf", 0.0),
        ("-infdB", 0.0),
        ("-inf dB", 0.0),
        ("x0.5", 0.5),
        ("x-0.5", -0.5),  # polarity flips only when a negative factor asks for it
        ("x-1", -1.0),
        ("X2", 2.0),
        ("x0", 0.0),
        ("x1e-1", 0.1),
    ],
)
def test_parse_gain(text, expected):
    assert parse_gain(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "text",
    ["", "dB", "loud", "-6dBs", "6 d B", "nan", "inf", "+inf", "1e999", "1e4", "--6"]
    + ["x", "xx1", "x0.5dB", "x-inf", "x1e999"],
)
def test_parse_gain_rejects_junk(text):
    with pytest.raises(LincaeError, match="gain"):
        parse_gain(text)


@given(st.floats(-120, 120))
def test_db_round_trip(gain_db):
    assert linear_to_db(db_to_linear(gain_db)) == pytest.approx(gain_db, abs=1e-9)


def test_gain_for_target_lufs():
    factor = gain_for_target_lufs(-20.0, -14.0)
    assert factor == pytest.approx(10 ** (6 / 20))
    assert -20.0 + 20 * math.log10(factor) == pytest.approx(-14.0)
    with pytest.raises(LincaeError):
        gain_for_target_lufs(-math.inf, -14.0)


def test_gain_updates_loudness_estimate():
    scaled = gain(make_lat(loudness=-20.0), -0.5)
    assert scaled.meta.source_loudness_lufs == pytest.approx(-20.0 + 20 * math.log10(0.5))
    assert scaled.meta.loudness_is_estimate is True
    flipped = gain(make_lat(loudness=-20.0), -1.0)
    assert flipped.meta.source_loudness_lufs == -20.0
    assert flipped.meta.loudness_is_estimate is False
    assert gain(make_lat(), 0.0).meta.source_loudness_lufs is None
    assert gain(make_lat(loudness=None), 2.0).meta.source_loudness_lufs is None


def test_mix_loudness_is_a_power_sum_where_one_holds():
    a, b = make_lat(seed=1), make_lat(seed=2, loudness=-20.0 - 20 * math.log10(2.0))
    both = mix([a, b], [1.0, 2.0])  # uncorrelated inputs add their powers: -20 and -20 LUFS
    assert both.meta.source_loudness_lufs == pytest.approx(-20.0 + 10 * math.log10(2.0))
    assert both.meta.loudness_is_estimate is True
    solo = mix([a, b], [2.0, 0.0])
    assert solo.meta.source_loudness_lufs == pytest.approx(-20.0 + 20 * math.log10(2.0))
    assert solo.meta.loudness_is_estimate is True
    # A difference can cancel; an input of unknown loudness, or inputs that do not start and
    # end together, leave nothing to estimate from.
    assert subtract(a, [b]).meta.source_loudness_lufs is None
    assert mix([a, b], [1.0, -1.0]).meta.source_loudness_lufs is None
    assert mix([a, make_lat(seed=3, loudness=None)]).meta.source_loudness_lufs is None
    shorter = make_lat(frames=4, seed=3)
    assert mix([a, shorter], pad=True).meta.source_loudness_lufs is None


def test_provenance_recorded():
    a, b = make_lat(seed=1), make_lat(seed=2)
    scaled = gain(a, 0.5)
    assert [entry["op"] for entry in scaled.meta.provenance] == ["encode", "gain"]
    assert scaled.meta.provenance[-1]["gain_linear"] == 0.5
    assert {"lincae_version", "time"} <= scaled.meta.provenance[-1].keys()
    result = subtract(scaled, [b], names=["s.lat", "b.lat"])
    (entry,) = result.meta.provenance
    assert entry["op"] == "subtract"
    assert [item["name"] for item in entry["inputs"]] == ["s.lat", "b.lat"]
    assert [item["gain_linear"] for item in entry["inputs"]] == [1.0, -1.0]
    assert entry["inputs"][0]["provenance"] == scaled.meta.provenance
    assert a.meta.provenance == [{"op": "encode", "input": "in1.wav"}]


def test_results_survive_the_file_format():
    a, b = make_lat(seed=1), make_lat(seed=2)
    for result in (mix([a, b]), gain(a, 0.0), subtract(a, [b])):
        back = lat_from_bytes(lat_to_bytes(result, dtype="float32"))
        assert np.array_equal(back.latents, result.latents)
        assert back.meta == result.meta


# -- mono among stereo: upmixed, exactly ---------------------------------------------------


def test_upmix_to_stereo_puts_the_mono_channel_on_both_sides():
    mono = make_lat(channels=1, loudness=-20.0)
    stereo = upmix_to_stereo(mono)
    latents = np.asarray(stereo.latents)
    assert latents.shape == (2, 4, 8) and stereo.channels == stereo.meta.channels == 2
    assert np.array_equal(latents[0], np.asarray(mono.latents)[0])
    assert np.array_equal(latents[1], np.asarray(mono.latents)[0])
    # BS.1770 sums the powers of L and R: the same signal on both is 10*log10(2) LU louder.
    assert stereo.meta.source_loudness_lufs == pytest.approx(-20.0 + 10 * math.log10(2))
    last = stereo.meta.provenance[-1]
    assert (last["op"], last["channels_from"], last["channels_to"]) == ("upmix", 1, 2)
    assert stereo.meta.provenance[:-1] == mono.meta.provenance
    back = lat_from_bytes(lat_to_bytes(stereo, dtype="float32"))  # a valid stereo file
    assert back.meta == stereo.meta
    with pytest.raises(LincaeError, match="only mono latents can be upmixed, not 2 channels"):
        upmix_to_stereo(stereo)


def test_mix_and_subtract_upmix_mono_inputs_among_stereo_ones():
    stereo, mono = make_lat(seed=1), make_lat(seed=2, channels=1)
    both_sides = np.repeat(np.asarray(mono.latents), 2, axis=0)
    mixed = mix([mono, stereo], [0.5, 1.0], names=["m.lat", "s.lat"])
    assert mixed.channels == mixed.meta.channels == 2
    expected = np.float32(0.5) * both_sides + np.asarray(stereo.latents, np.float32)
    assert np.array_equal(np.asarray(mixed.latents), expected)
    inputs = mixed.meta.provenance[-1]["inputs"]
    assert [i["provenance"][-1]["op"] for i in inputs] == ["upmix", "encode"]
    rest = subtract(stereo, [mono])
    assert np.array_equal(np.asarray(rest.latents), np.asarray(stereo.latents) - both_sides)
    # Only mono is upmixed, and only to stereo: other channel counts are still refused.
    with pytest.raises(LincaeError, match=r"channels differs \(x: 3, y: 1\)"):
        mix([make_lat(channels=3), mono], names=["x", "y"])
