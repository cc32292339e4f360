"""The .lat v1 container: round trips, atomic writes, and rejection of bad bytes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import sys

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lincae_cli.errors import LincaeError
from lincae_cli.latents import latfile
from lincae_cli.latents.latfile import (
    FORMAT_NAME,
    LatentFile,
    LatentMeta,
    lat_from_bytes,
    lat_to_bytes,
    provenance_entry,
    read_lat,
    write_lat,
)

MODEL_SHA256 = "ab" * 32


def make_lat(channels: int = 2, latent_channels: int = 4, frames: int = 6, seed: int = 0):
    """A small LatentFile with seeded values exactly representable in float16."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(channels, latent_channels, frames, generator=generator)
    latents = latents.to(torch.float16).to(torch.float32)
    meta = LatentMeta(
        model_name="tiny-test",
        model_sha256=MODEL_SHA256,
        scale_factor=1.5,
        model_sample_rate=44100,
        source_sample_rate=48000,
        num_samples=frames * 4096 * 48000 // 44100,
        channels=channels,
        latent_rate_hz=44100 / 4096,
        latent_hop_samples=4096,
        chunking={"chunk_seconds": 10.0, "overlap_seconds": 1.0},
        source_loudness_lufs=-18.25,
        loudness_is_estimate=False,
        provenance=[provenance_entry("encode", input="song.wav")],
    )
    return LatentFile(latents=latents, meta=meta)


VALID_BYTES = lat_to_bytes(make_lat(frames=4))


def rebuild(lat_bytes: bytes, edit_metadata=None, edit_document=None) -> bytes:
    """Re-serialise valid .lat bytes after editing their metadata or JSON document."""
    header_length = struct.unpack("<Q", lat_bytes[:8])[0]
    header = json.loads(lat_bytes[8 : 8 + header_length])
    metadata = header["__metadata__"]
    if edit_document is not None:
        document = json.loads(metadata["lincae"])
        edit_document(document)
        metadata["lincae"] = json.dumps(document)
    if edit_metadata is not None:
        edit_metadata(metadata)
    tensors = safetensors.torch.load(lat_bytes)
    return safetensors.torch.save(tensors, metadata=metadata)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_bytes(dtype):
    lat = make_lat()
    back = lat_from_bytes(lat_to_bytes(lat, dtype=dtype))
    assert back.latents.dtype == np.float32
    assert np.array_equal(back.latents, lat.latents)
    assert back.meta == lat.meta


def test_float32_keeps_values_float16_would_round():
    lat = dataclasses.replace(make_lat(), latents=torch.full((2, 4, 6), 1.0 + 2.0**-20))
    assert np.array_equal(lat_from_bytes(lat_to_bytes(lat, dtype="float32")).latents, lat.latents)
    assert not np.array_equal(lat_from_bytes(lat_to_bytes(lat)).latents, lat.latents)


def test_file_is_plain_safetensors(tmp_path):
    path = tmp_path / "plain.lat"
    path.write_bytes(VALID_BYTES)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        assert metadata["format"] == FORMAT_NAME
        assert metadata["format_version"] == "1.1"
        assert json.loads(metadata["lincae"])["model_sha256"] == MODEL_SHA256
        assert handle.get_tensor("latents").dtype == torch.float16


def test_write_and_read_path(tmp_path):
    lat = make_lat()
    target = tmp_path / "a.lat"
    write_lat(target, lat)
    assert np.array_equal(read_lat(target).latents, lat.latents)
    assert list(tmp_path.iterdir()) == [target]


def test_write_stamps_format_and_version():
    old = dataclasses.replace(make_lat().meta, lincae_version="0.0.1", format_version="1.7")
    back = lat_from_bytes(lat_to_bytes(LatentFile(make_lat().latents, old)))
    assert back.meta.format_version == latfile.FORMAT_VERSION
    assert back.meta.lincae_version == latfile.__version__


def test_stdout_and_stdin(monkeypatch):
    lat = make_lat()
    stdout = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": stdout})())
    write_lat("-", lat)
    monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": io.BytesIO(stdout.getvalue())})())
    assert np.array_equal(read_lat("-").latents, lat.latents)


def test_binary_streams():
    stream = io.BytesIO()
    write_lat(stream, make_lat(), dtype="float32")
    stream.seek(0)
    assert read_lat(stream).meta.model_name == "tiny-test"


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, failing):
    target = tmp_path / "out.lat"

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(KeyboardInterrupt):
        write_lat(target, make_lat())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.lat"
    write_lat(target, make_lat(seed=1))
    before = target.read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(LincaeError, match="out.lat: cannot write .No space left"):
        write_lat(target, make_lat(seed=2))
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(LincaeError, match="does not exist"):
        write_lat(tmp_path / "nope" / "a.lat", make_lat())


def test_float16_overflow_is_refused():
    lat = dataclasses.replace(make_lat(), latents=torch.full((2, 4, 6), 1e6))
    with pytest.raises(LincaeError, match="overflow float16"):
        lat_to_bytes(lat, name="big.lat")
    assert lat_from_bytes(lat_to_bytes(lat, dtype="float32")).latents.max() == 1e6


def test_unknown_dtype():
    with pytest.raises(LincaeError, match="unknown latent dtype"):
        lat_to_bytes(make_lat(), dtype="bfloat16")


def test_missing_file(tmp_path):
    with pytest.raises(LincaeError, match="missing.lat: no such file"):
        read_lat(tmp_path / "missing.lat")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a .lat file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a .lat file"),
        (VALID_BYTES[:100], "truncated"),
        (VALID_BYTES[:-10], "truncated"),
        (safetensors.torch.save({"latents": torch.zeros(1, 1, 1)}), "not a .lat file"),
    ],
)
def test_bad_bytes_name_the_file(tmp_path, data, message):
    path = tmp_path / "bad.lat"
    path.write_bytes(data)
    with pytest.raises(LincaeError, match=f"bad.lat: .*{message}"):
        read_lat(path)


def test_other_major_version_rejected():
    def bump(metadata):
        metadata["format_version"] = "2.0"

    with pytest.raises(LincaeError, match="x.lat: .lat format version 2.0 is not supported"):
        lat_from_bytes(rebuild(VALID_BYTES, edit_metadata=bump), "x.lat")


def test_newer_minor_version_accepted_and_extra_keys_ignored():
    def minor(metadata):
        metadata["format_version"] = "1.3"

    def extend(document):
        document["format_version"] = "1.3"
        document["future_field"] = [1, 2, 3]

    data = rebuild(VALID_BYTES, edit_metadata=minor, edit_document=extend)
    assert lat_from_bytes(data).meta.format_version == "1.3"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(channels=1), "metadata says 1 channel"),
        (lambda d: d.pop("model_sha256"), "lacks 'model_sha256'"),
        (lambda d: d.update(num_samples="12"), "'num_samples' should be int"),
        (lambda d: d.update(num_samples=0), "num_samples must be positive"),
        (lambda d: d.update(latent_rate_hz=3.0), "disagrees with model_sample_rate"),
        (lambda d: d.update(model_sha256="xyz"), "64 lowercase hex"),
        (lambda d: d.update(provenance=[1]), "provenance entries"),
        (lambda d: d.update(format_version="1.0"), "format fields disagree"),
        (lambda d: d.update(num_samples=80 * 48000), r"80.000 s .*which is 862 latent frame"),
        (lambda d: d.update(source_sample_rate=4800), r"which is 40 latent frame.*hold 4 "),
        (lambda d: d.update(latent_hop_samples=2048, latent_rate_hz=44100 / 2048), "hold 4 "),
        (lambda d: d.update(source_sample_rate=48000 * 300), "source_sample_rate .* implausible"),
        (lambda d: d.update(source_sample_rate=100), "source_sample_rate .* implausible"),
        (lambda d: d.update(scale_factor=0), "scale_factor must be finite and positive"),
        (lambda d: d.update(scale_factor=-1.5), "scale_factor must be finite and positive"),
        (lambda d: d.update(chunking={"chunk_seconds": float("nan")}), "unreadable 'lincae'"),
    ],
)
def test_inconsistent_metadata_rejected(edit, message):
    with pytest.raises(LincaeError, match=f"x.lat: .*{message}") as raised:
        lat_from_bytes(rebuild(VALID_BYTES, edit_document=edit), "x.lat")
    assert "\n" not in str(raised.value)


def test_frames_follow_num_samples_at_the_model_rate():
    """ceil(resampled_length(N, source, model) / hop): the last frame may be partly silence."""
    lat = make_lat(frames=4)  # 4 frames of 4096 samples at 44100 Hz; the source is at 48000 Hz

    def at_model_rate(n: int) -> int:  # n * 44100 / 48000 rounded half up
        return (2 * n * 44100 + 48000) // (2 * 48000)

    fitting = [n for n in range(1, 20000) if 3 * 4096 < at_model_rate(n) <= 4 * 4096]
    for num_samples in (fitting[0], fitting[-1]):
        meta = dataclasses.replace(lat.meta, num_samples=num_samples)
        assert meta.expected_frames == 4
        lat_from_bytes(lat_to_bytes(LatentFile(lat.latents, meta)))
    too_long = dataclasses.replace(lat.meta, num_samples=fitting[-1] + 1)
    assert too_long.model_rate_samples == 4 * 4096 + 1 and too_long.expected_frames == 5
    too_short = dataclasses.replace(lat.meta, num_samples=fitting[0] - 1)
    with pytest.raises(LincaeError, match="short.lat: .* 3 latent frame.* hold 4"):
        lat_to_bytes(LatentFile(lat.latents, too_short), name="short.lat")
    with pytest.raises(LincaeError, match="long.lat: header says .* 5 latent frame.* hold 4"):
        lat_to_bytes(LatentFile(lat.latents, too_long), name="long.lat")


def test_header_of_80_s_over_8_s_of_latents_is_refused(tmp_path):
    """The reported case: the header claims ten times the audio the latents hold."""
    frames = 87  # 8 s at 44100 Hz with a 4096-sample hop
    lat = make_lat(channels=1, frames=frames)
    meta = dataclasses.replace(lat.meta, source_sample_rate=44100, num_samples=8 * 44100)
    good = lat_to_bytes(LatentFile(lat.latents, meta))
    path = tmp_path / "song.lat"
    path.write_bytes(rebuild(good, edit_document=lambda d: d.update(num_samples=80 * 44100)))
    with pytest.raises(LincaeError, match=r"song.lat: header says 80.000 s .* hold 87 \(8.081 s\)"):
        read_lat(path)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_latents_rejected(bad_value):
    tensors = safetensors.torch.load(VALID_BYTES)
    tensors["latents"][0, 0, 0] = bad_value
    header_length = struct.unpack("<Q", VALID_BYTES[:8])[0]
    metadata = json.loads(VALID_BYTES[8 : 8 + header_length])["__metadata__"]
    with pytest.raises(LincaeError, match="x.lat: latents contain NaN or Inf"):
        lat_from_bytes(safetensors.torch.save(tensors, metadata=metadata), "x.lat")


def check_clean_outcome(data: bytes) -> None:
    """Bad bytes must give a LincaeError naming the file or a fully validated file."""
    try:
        lat = lat_from_bytes(data, "fuzz.lat")
    except LincaeError as error:
        assert str(error).startswith("fuzz.lat: ")
    else:
        latfile.validate_latent_file(lat, "fuzz.lat")
        assert lat.latents.dtype == np.float32


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(VALID_BYTES) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
    truncate_to=st.one_of(st.none(), st.integers(0, len(VALID_BYTES))),
)
def test_corrupted_bytes_fail_cleanly(flips, truncate_to):
    data = bytearray(VALID_BYTES)
    for position, mask in flips:
        data[position] ^= mask
    check_clean_outcome(bytes(data[:truncate_to]))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64), header_length=st.integers(0, 2**64 - 1))
def test_arbitrary_bytes_fail_cleanly(data, header_length):
    check_clean_outcome(struct.pack("<Q", header_length) + data)
    check_clean_outcome(data)
