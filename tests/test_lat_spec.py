"""A second `.lat` reader, written from docs/lat-format.md alone (struct, json, numpy; nothing
from lincae_cli): it must agree with `read_lat` on the files lincae writes, and both must
reject the same broken or inconsistent files. Where they disagree, the spec or the code is
wrong."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lincae_cli.errors import LincaeError
from lincae_cli.latents import edit
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry, read_lat
from lincae_cli.latents.latfile import write_lat as library_write_lat
from lincae_cli.latents.ops import gain, mix, subtract


class SpecError(Exception):
    """The bytes break docs/lat-format.md."""


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise SpecError(reason)


# -- the reader, section by section of docs/lat-format.md ---------------------------------------

DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
KEY_TYPES = {  # "The `lincae` JSON document": every key and its type
    "format": "string",
    "format_version": "string",
    "model_name": "string",
    "model_sha256": "string",
    "scale_factor": "float",
    "model_sample_rate": "int",
    "source_sample_rate": "int",
    "num_samples": "int",
    "channels": "int",
    "latent_rate_hz": "float",
    "latent_hop_samples": "int",
    "chunking": "object",
    "source_loudness_lufs": "float or null",
    "loudness_is_estimate": "bool",
    "provenance": "array of objects",
    "lincae_version": "string",
}
OPTIONAL_KEYS = {  # keys added by format 1.1, with their value when absent
    "offset_samples": 0,
    "silence_latent": None,
    "affine_default": False,
}


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def has_type(value: object, kind: str) -> bool:
    number = is_int(value) or isinstance(value, float)
    return {
        "string": isinstance(value, str),
        "int": is_int(value),
        "float": number,
        "bool": isinstance(value, bool),
        "object": isinstance(value, dict),
        "float or null": value is None or number,
        "array of objects": isinstance(value, list) and all(isinstance(v, dict) for v in value),
    }[kind]


def strict_json(text: str) -> object:
    """JSON without the NaN/Infinity extensions ("finite (NaN and Infinity are not allowed)")."""

    def refuse(token: str) -> None:
        raise SpecError(f"{token} in JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as error:
        raise SpecError(f"bad JSON: {error}") from None


def spec_read(data: bytes) -> tuple[np.ndarray, dict]:
    """The float32 latents ``[channels, latent_channels, frames]`` and the JSON document."""
    # Container: N (u64 LE), N bytes of UTF-8 JSON, then the tensor data.
    check(len(data) >= 8, "shorter than the header length")
    (n,) = struct.unpack("<Q", data[:8])
    check(8 + n <= len(data), "header runs past the end")
    try:
        header = strict_json(data[8 : 8 + n].decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError("header is not UTF-8") from None
    check(isinstance(header, dict), "header is not an object")
    metadata = header.get("__metadata__")
    check(isinstance(metadata, dict), "no __metadata__")
    check(all(isinstance(v, str) for v in metadata.values()), "metadata is string -> string")
    check(metadata.get("format") == "lincae-latent", "not a .lat file")
    version = metadata.get("format_version")
    match = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    check(match is not None and int(match.group(1)) == 1, "not format version 1.x")
    document = strict_json(metadata.get("lincae")) if "lincae" in metadata else None
    check(isinstance(document, dict), "no lincae JSON document")

    # The document: all keys required, with their types; format fields as in the metadata.
    for key, kind in KEY_TYPES.items():
        check(key in document and has_type(document[key], kind), f"{key} missing or not {kind}")
    check(document["format"] == "lincae-latent", "format differs")
    check(document["format_version"] == version, "format_version differs")
    check(re.fullmatch("[0-9a-f]{64}", document["model_sha256"]) is not None, "bad sha256")
    for key in ("model_sample_rate", "source_sample_rate", "num_samples", "channels"):
        check(document[key] > 0, f"{key} must be > 0")
    check(document["latent_hop_samples"] > 0, "latent_hop_samples must be > 0")
    for key in ("scale_factor", "latent_rate_hz"):
        check(math.isfinite(document[key]) and document[key] > 0, f"{key} must be > 0")
    loudness = document["source_loudness_lufs"]
    check(loudness is None or math.isfinite(loudness), "loudness must be finite")
    rate, source_rate = document["model_sample_rate"], document["source_sample_rate"]
    hop = document["latent_hop_samples"]
    check(1 / 256 <= source_rate / rate <= 256, "source rate more than 256x off the model rate")
    check(math.isclose(document["latent_rate_hz"], rate / hop, rel_tol=1e-6), "latent_rate_hz")
    document = {**OPTIONAL_KEYS, **document}
    offset = document["offset_samples"]
    check(is_int(offset) and offset >= 0, "offset_samples must be an int >= 0")
    check(offset == 0 or "stft_hop" in document["chunking"], "offset_samples without framing")
    silence = document["silence_latent"]
    numbers = isinstance(silence, list) and all(
        (is_int(x) or isinstance(x, float)) and math.isfinite(x) for x in silence
    )
    check(silence is None or numbers, "silence_latent must be a list of numbers")
    check(isinstance(document["affine_default"], bool), "affine_default must be a bool")

    # The `latents` tensor.
    entry = header.get("latents")
    check(isinstance(entry, dict) and entry.get("dtype") in DTYPES, "no F16/F32 latents")
    dtype, shape, offsets = DTYPES[entry["dtype"]], entry.get("shape"), entry.get("data_offsets")
    check(isinstance(shape, list) and len(shape) == 3 and all(map(is_int, shape)), "not 3-D")
    check(min(shape) >= 1, "every dimension at least 1")
    check(isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets)), "offsets")
    begin, end = offsets
    check(0 <= begin <= end and end - begin == math.prod(shape) * dtype.itemsize, "offsets")
    check(8 + n + end <= len(data), "tensor data runs past the end")
    latents = np.frombuffer(data, dtype, math.prod(shape), 8 + n + begin).reshape(shape)
    latents = latents.astype(np.float32)
    check(bool(np.isfinite(latents).all()), "NaN or Inf latents")

    # Agreement between the document and the tensor: channels, and the frame-count rule.
    check(document["channels"] == shape[0], "channels differ from the tensor")
    check(silence is None or len(silence) == shape[1], "silence_latent length")
    span = offset + document["num_samples"]  # source samples the latents decode to
    length = (2 * span * rate + source_rate) // (2 * source_rate)
    chunking = document["chunking"]
    if "stft_hop" in chunking:  # the reference framing: whole STFT frames, 2^d per frame
        stft_hop, n_fft = chunking["stft_hop"], chunking["n_fft"]
        rounding = chunking.get("latent_frame_rounding", "ceil")
        check(chunking.get("stft_start_sample") == 0 and hop % stft_hop == 0, "framing")
        check(rounding in ("ceil", "floor"), "latent_frame_rounding")
        stft_frames = max(1, (length - n_fft) // stft_hop + 1)
        per_latent = hop // stft_hop
        if rounding == "floor":  # music2latent's crop to whole latent frames
            check(shape[2] == max(1, stft_frames // per_latent), "frame-count rule")
        else:
            check(shape[2] == math.ceil(stft_frames / per_latent), "frame-count rule")
    else:  # files from before it
        check(shape[2] == math.ceil(length / hop), "frames break the frame-count rule")
    return latents, document


# -- files lincae writes ----------------------------------------------------------------------


def synthetic(
    frames: int, channels: int = 2, source_rate: int = 44100, seed: int = 0, **changes
) -> LatentFile:
    """A consistent LatentFile: num_samples is the longest the frame count allows."""
    latents = torch.randn(channels, 8, frames, generator=torch.Generator().manual_seed(seed))
    meta = LatentMeta(
        model_name="tiny-test",
        model_sha256="ab" * 32,
        scale_factor=1.25,
        model_sample_rate=44100,
        source_sample_rate=source_rate,
        num_samples=(frames * 4096 * source_rate) // 44100,
        channels=channels,
        latent_rate_hz=44100 / 4096,
        latent_hop_samples=4096,
        source_loudness_lufs=-20.0,
        provenance=[provenance_entry("encode", input=f"in{seed}.wav")],
    )
    return LatentFile(latents, dataclasses.replace(meta, **changes))


def written(lat: LatentFile, dtype: str = "float16") -> bytes:
    stream = io.BytesIO()
    library_write_lat(stream, lat, dtype=dtype)
    return stream.getvalue()


def files_lincae_writes() -> dict[str, bytes]:
    stereo, mono = synthetic(7), synthetic(3, channels=1, source_rate=22050, seed=1)
    short = synthetic(4, seed=2, num_samples=4 * 4096 - 4095)
    # 8917 samples at 48 kHz are 8192.49 at 44.1 kHz: rounding up instead of half up (as the
    # encoder does) would claim a third frame in a mix at the model rate.
    odd = synthetic(2, source_rate=48000, seed=3, num_samples=8917)
    other_rate = synthetic(1, source_rate=22050, seed=4)
    framing = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}
    framed = synthetic(7, seed=5, chunking=framing)
    # music2latent's rounding: 7 whole latent frames need 56 STFT frames, 30208 samples.
    floor = {**framing, "latent_frame_rounding": "floor"}
    cropped = synthetic(7, seed=6, chunking=floor, num_samples=7 * 4096 + 2048 - 512)
    return {
        "stereo.lat": written(stereo),
        "stereo32.lat": written(stereo, "float32"),
        "mono.lat": written(mono, "float32"),
        "gain.lat": written(gain(stereo, -0.5)),
        "mute.lat": written(gain(mono, 0.0)),
        "mix-pad.lat": written(mix([stereo, short], [1.0, 0.5], pad=True)),
        "subtract-pad.lat": written(subtract(short, [stereo], pad=True), "float32"),
        "mix-rates.lat": written(mix([odd, other_rate], pad=True)),
        "trim.lat": written(edit.trim(framed, 5000, 5 * 4096 + 77)),
        "pad.lat": written(edit.pad(framed, 1234, 99, silence=[0.25] * 8)),
        "concat.lat": written(edit.concat([framed, framed], ["a", "b"], crossfade=0.1)),
        "fade.lat": written(edit.fade(edit.trim(framed, 10, 8000), 0.05, 0.05, "cosine")),
        "subtract-rates.lat": written(subtract(other_rate, [odd], pad=True)),
        "floor.lat": written(cropped),
        "floor-trim.lat": written(edit.trim(cropped, 100, 4 * 4096 + 5000)),
    }


FILES = files_lincae_writes()
VALID = FILES["stereo.lat"]


def both_readers(data: bytes) -> tuple[object, object]:
    """What each reader makes of ``data``: its (latents, document) or the exception."""
    try:
        ours: object = spec_read(data)
    except SpecError as error:
        ours = error
    try:
        lat = read_lat(io.BytesIO(data))
        theirs: object = (lat.latents, lat.meta.to_json_dict())
    except LincaeError as error:
        theirs = error
    return ours, theirs


def assert_agree(data: bytes) -> bool:
    """Both accept with the same values and metadata, or both reject; True if accepted."""
    ours, theirs = both_readers(data)
    assert isinstance(ours, SpecError) == isinstance(theirs, LincaeError), (ours, theirs)
    if isinstance(ours, SpecError):
        assert "\n" not in str(theirs)
        return False
    (latents, document), (lib_latents, lib_document) = ours, theirs
    assert np.array_equal(latents, lib_latents)
    assert {key: document[key] for key in [*KEY_TYPES, *OPTIONAL_KEYS]} == lib_document
    return True


@pytest.mark.parametrize("name", list(FILES))
def test_readers_agree_on_what_lincae_writes(name):
    assert assert_agree(FILES[name])


def test_readers_agree_on_what_the_encoder_writes(tiny_model_path):
    import lincae_cli

    model = lincae_cli.load_model(str(tiny_model_path), device="cpu", precision="fp32")
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 48000 + 17)).astype(np.float32)
    lat = lincae_cli.encode_audio(model, audio, 48000)
    assert assert_agree(written(lat))


# -- the same files, broken ---------------------------------------------------------------------


def repack(data: bytes, edit_header=None, edit_document=None, edit_latents=None) -> bytes:
    """``data`` rewritten after editing its header, its JSON document or its latents."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    entry = header["latents"]
    latents = np.frombuffer(data[8 + n :], DTYPES[entry["dtype"]]).reshape(entry["shape"])
    metadata = header["__metadata__"]
    if edit_document:
        document = json.loads(metadata["lincae"])
        edit_document(document)
        metadata["lincae"] = json.dumps(document)
    if edit_latents:
        latents = edit_latents(latents.copy())
        entry["shape"], entry["data_offsets"] = list(latents.shape), [0, latents.nbytes]
    if edit_header:
        edit_header(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + latents.tobytes()


def set_(key, value):
    return lambda d: d.update({key: value})


_FRAMING = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}


BROKEN = {
    "80 s over 8 s": {"edit_document": lambda d: d.update(num_samples=d["num_samples"] * 10)},
    "one sample too long": {"edit_document": lambda d: d.update(num_samples=d["num_samples"] + 2)},
    "source rate": {"edit_document": set_("source_sample_rate", 4410)},
    "source rate absurd": {"edit_document": set_("source_sample_rate", 44100 * 300)},
    "hop": {"edit_document": set_("latent_hop_samples", 2048)},
    "latent rate": {"edit_document": set_("latent_rate_hz", 10.0)},
    "channels": {"edit_document": set_("channels", 1)},
    "zero scale": {"edit_document": set_("scale_factor", 0)},
    "negative scale": {"edit_document": set_("scale_factor", -1.25)},
    "int as float": {"edit_document": set_("num_samples", 28672.0)},
    "bool as int": {"edit_document": set_("channels", True)},
    "missing key": {"edit_document": lambda d: d.pop("lincae_version")},
    "NaN in chunking": {"edit_document": set_("chunking", {"chunk_seconds": float("nan")})},
    "infinite loudness": {"edit_document": set_("source_loudness_lufs", float("inf"))},
    "sha256": {"edit_document": set_("model_sha256", "AB" * 32)},
    "format fields": {"edit_document": set_("format_version", "1.0")},
    "negative offset": {"edit_document": set_("offset_samples", -1)},
    "offset past the frames": {"edit_document": set_("offset_samples", 4096)},
    "silence latent length": {"edit_document": set_("silence_latent", [0.5] * 3)},
    "unknown rounding": {
        "edit_document": set_("chunking", {**_FRAMING, "latent_frame_rounding": "round"})
    },
    # 7 frames of 28672 samples: 53 STFT frames, ceil(53/8) = 7 but floor(53/8) = 6.
    "floor count": {
        "edit_document": set_("chunking", {**_FRAMING, "latent_frame_rounding": "floor"})
    },
    "silence latent text": {"edit_document": set_("silence_latent", ["a"] * 8)},
    "major 2": {"edit_header": lambda h: h["__metadata__"].update(format_version="2.0")},
    "not ours": {"edit_header": lambda h: h.pop("__metadata__")},
    "dtype": {"edit_header": lambda h: h["latents"].update(dtype="BF16")},
    "offsets": {"edit_header": lambda h: h["latents"].update(data_offsets=[0, 8])},
    "frame dropped": {"edit_latents": lambda x: x[..., :-1]},
    "2-D": {"edit_latents": lambda x: x[0]},
    "NaN latent": {"edit_latents": lambda x: np.where(x == x.flat[0], np.nan, x).astype(x.dtype)},
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_both_readers_reject_the_same_files(case):
    assert not assert_agree(repack(VALID, **BROKEN[case]))


def test_both_accept_what_the_spec_allows():
    def newer(header):
        header["__metadata__"]["format_version"] = "1.3"

    def extended(document):
        document.update(format_version="1.3", future_key=[1], scale_factor=2)
        document["provenance"].append({"op": "from-the-future"})

    assert assert_agree(repack(VALID, edit_header=newer, edit_document=extended))
    (n,) = struct.unpack("<Q", VALID[:8])
    padded = struct.pack("<Q", n + 7) + VALID[8 : 8 + n] + b" " * 7 + VALID[8 + n :]
    assert assert_agree(padded)
    assert not assert_agree(VALID[:-1])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_readers_agree_on_corrupted_headers(data):
    """Byte flips in the header (where the rules are): the same verdict and the same values."""
    (n,) = struct.unpack("<Q", VALID[:8])
    corrupted = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        corrupted[data.draw(st.integers(8, 8 + n - 1))] ^= data.draw(st.integers(1, 255))
    assert_agree(bytes(corrupted))
