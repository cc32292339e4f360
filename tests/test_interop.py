"""Interop and the everyday model: `.npy` + sidecar latents (latents/npy.py), `LINCAE_MODEL`,
distinct names for the models `lincae train` exports, and `-o` with an unknown extension."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lincae_cli.audio import io as audio_io
from lincae_cli.errors import LincaeError
from lincae_cli.hub.registry import DEFAULT_MODEL, default_model
from lincae_cli.hub.store import read_model_metadata
from lincae_cli.latents.container import split_container
from lincae_cli.latents.framing import expected_frames
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry, read_lat, write_lat
from lincae_cli.latents.npy import load_npy, sidecar_path
from tests.conftest import FAST, run_lincae, write_tone

FRAMING = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}
H = 4096


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Silence latents of the test models cached in the test's folder; no LINCAE_MODEL of the
    machine's."""
    monkeypatch.setenv("LINCAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LINCAE_MODEL", raising=False)


def synthetic(frames: int = 9, channels: int = 2, seed: int = 0) -> LatentFile:
    rng = np.random.default_rng(seed)
    latents = (3 * rng.standard_normal((channels, 8, frames))).astype(np.float32)
    span = frames * H + FRAMING["n_fft"] - FRAMING["stft_hop"]
    meta = LatentMeta(
        model_name="tiny-test",
        model_sha256="ab" * 32,
        scale_factor=1.0,
        model_sample_rate=44100,
        source_sample_rate=48000,
        num_samples=span * 48000 // 44100,
        channels=channels,
        latent_rate_hz=44100 / H,
        latent_hop_samples=H,
        chunking=dict(FRAMING),
        source_loudness_lufs=-17.25,
        silence_latent=[0.125] * 8,
        provenance=[provenance_entry("encode", input="song.wav")],
    )
    return LatentFile(latents, meta)


# -- .npy + sidecar ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_lat_to_npy_to_lat_is_lossless(tmp_path: Path, dtype: str) -> None:
    first = tmp_path / "a.lat"
    write_lat(first, synthetic(), dtype=dtype)
    lat = read_lat(first)
    write_lat(tmp_path / "a.npy", lat, dtype=dtype)

    stored = np.load(tmp_path / "a.npy", allow_pickle=False)  # a plain array for other tools
    assert stored.dtype == np.dtype(dtype) and stored.shape == lat.latents.shape
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar == lat.meta.to_json_dict()  # the .lat's `lincae` document, unchanged

    back = read_lat(tmp_path / "a.npy")
    assert np.array_equal(back.latents, lat.latents) and back.meta == lat.meta
    write_lat(tmp_path / "b.lat", back, dtype=dtype)
    (a_header, a_data), (b_header, b_data) = (
        split_container(path.read_bytes(), path.name) for path in (first, tmp_path / "b.lat")
    )
    assert a_header == b_header and bytes(a_data) == bytes(b_data)  # the same file


def test_npy_readers_reject_what_is_not_latents(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    write_lat(path, synthetic())
    good = path.read_bytes()
    cases = [
        (b"not numpy at all", "not a .npy file"),
        (good[:-6], "corrupt .npy file"),
    ]
    for data, words in cases:
        path.write_bytes(data)
        with pytest.raises(LincaeError, match=words):
            read_lat(path)
    np.save(path, np.zeros((2, 8, 3), np.int16))
    with pytest.raises(LincaeError, match="float16 or float32"):
        read_lat(path)
    np.save(path, np.zeros((8, 3), np.float32))
    with pytest.raises(LincaeError, match=r"\[channels, latent_channels, frames\]"):
        read_lat(path)
    np.save(path, np.zeros((1, 8, 3), np.float32))  # the sidecar says 2 channels and 9 frames
    with pytest.raises(LincaeError, match="channel"):
        read_lat(path)
    sidecar_path(path).write_text("{")
    with pytest.raises(LincaeError, match=r"x\.json: corrupt"):
        read_lat(path)


def test_npy_outputs_are_atomic_and_never_clobber_a_sidecar(tmp_path: Path, cli) -> None:
    lat_path = tmp_path / "a.lat"
    write_lat(lat_path, synthetic())
    (tmp_path / "b.json").write_text("notes of mine")
    result = cli("gain", str(lat_path), "0", "-o", str(tmp_path / "b.npy"))
    assert result.exit_code == 1 and "b.json: already exists" in result.stderr
    assert (tmp_path / "b.json").read_text() == "notes of mine"
    assert not (tmp_path / "b.npy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    result = cli("gain", str(lat_path), "0", "-o", str(tmp_path / "b.npy"), "--force")
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(read_lat(tmp_path / "b.npy").latents, read_lat(lat_path).latents)


def test_encode_writes_npy_that_decode_and_info_read(tmp_path: Path, tiny_model_path, cli) -> None:
    audio = write_tone(tmp_path / "music" / "a.wav", seconds=0.6, channels=2)
    model = ["--model", str(tiny_model_path), *FAST]
    done = run_lincae(["encode", str(audio), "-o", str(tmp_path / "a.npy"), *model])
    assert done.returncode == 0, done.stderr.decode()
    result = cli("encode", str(audio), "-o", str(tmp_path / "a.lat"), model=True)
    assert result.exit_code == 0, result.stderr
    array = np.load(tmp_path / "a.npy")
    lat = read_lat(tmp_path / "a.lat")
    assert array.dtype == np.float16 and array.shape == lat.latents.shape
    assert np.array_equal(array.astype(np.float32), lat.latents)
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["model_name"] == "tiny-test" and sidecar["num_samples"] == lat.meta.num_samples

    arrays = tmp_path / "arrays"
    result = cli("encode", str(tmp_path / "music"), "-o", str(arrays), "--format", "npy",
                 "--dtype", "float32", model=True)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in arrays.iterdir()) == ["a.json", "a.npy"]
    assert np.load(arrays / "a.npy").dtype == np.float32

    result = cli("decode", str(tmp_path / "a.npy"), "-o", str(tmp_path / "a.wav"), model=True)
    assert result.exit_code == 0, result.stderr
    decoded, rate = sf.read(tmp_path / "a.wav")
    assert rate == 44100 and decoded.shape == (lat.meta.num_samples, 2)

    done = run_lincae(["info", str(tmp_path / "a.npy"), "--json"])
    entry = json.loads(done.stdout)["files"][0]
    assert done.returncode == 0 and entry["dtype"] == "float16" and entry["frames"] == lat.frames


def test_latent_ops_on_npy_never_import_torch(tmp_path: Path) -> None:
    write_lat(tmp_path / "a.npy", synthetic())
    write_lat(tmp_path / "b.npy", synthetic(seed=1), dtype="float32")
    steps = [
        ["gain", "a.npy", "-6", "-o", "g.npy"],
        ["mix", "a.npy", "b.npy", "-o", "m.lat"],
        ["subtract", "m.lat", "b.npy", "-o", "s.npy"],
        ["trim", "g.npy", "0.1", "0.5", "-o", "t.npy"],
        ["pad", "t.npy", "--start", "0.2", "-o", "p.npy"],
        ["fade", "p.npy", "--in", "0.1", "-o", "f.npy"],
        ["concat", "a.npy", "f.npy", "-o", "c.npy"],
        ["info", "c.npy", "s.npy"],
    ]
    script = (
        "import sys\nfrom lincae_cli.cli.app import main\ncode = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)\n"
    )
    for args in steps:
        done = subprocess.run(
            [sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True
        )
        assert done.returncode == 0, (args, done.stderr.decode())
    subtracted = read_lat(tmp_path / "s.npy")
    mixed, b = read_lat(tmp_path / "m.lat"), read_lat(tmp_path / "b.npy")
    assert np.allclose(subtracted.latents, np.float16(mixed.latents - b.latents), atol=1e-2)
    assert [e["op"] for e in read_lat(tmp_path / "t.npy").meta.provenance] == [
        "encode",
        "gain",
        "trim",
    ]


def test_bare_npy_needs_model_and_rate_and_spans_its_frames(tmp_path: Path, cli) -> None:
    lat = synthetic(frames=5, channels=1)
    bare = tmp_path / "bare.npy"
    np.save(bare, lat.latents)  # another tool's latents: no sidecar

    for command in (["gain", str(bare), "-6", "-o", str(tmp_path / "g.lat")], ["info", str(bare)]):
        result = cli(*command)
        assert result.exit_code == 1 and "no sidecar bare.json" in result.stderr, result.stderr
        assert "--model MODEL --sample-rate HZ" in result.stderr
    result = cli("decode", str(bare), "-o", str(tmp_path / "x.wav"), model=True)
    assert result.exit_code == 1 and "--sample-rate HZ" in result.stderr
    assert not (tmp_path / "x.wav").exists()

    tiny = _tiny_latents(tmp_path, cli)
    np.save(bare, tiny.latents)
    result = cli("decode", str(bare), "-o", str(tmp_path / "x.wav"), "-r", "22050", model=True)
    assert result.exit_code == 0, result.stderr
    decoded, rate = sf.read(tmp_path / "x.wav", always_2d=True)
    # The span of the frames: to the end of the last frame's last STFT window, at 22050 Hz.
    span = tiny.frames * tiny.meta.latent_hop_samples + 2048 - 512
    assert rate == 22050 and decoded.shape == (span // 2, tiny.channels)
    framing = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}
    assert expected_frames(framing, span, tiny.meta.latent_hop_samples) == tiny.frames
    assert load_npy(bare)[1] is None


def _tiny_latents(tmp_path: Path, cli) -> LatentFile:
    audio = write_tone(tmp_path / "tone.wav", seconds=0.5)
    result = cli("encode", str(audio), "-o", str(tmp_path / "tone.lat"), model=True)
    assert result.exit_code == 0, result.stderr
    return read_lat(tmp_path / "tone.lat")


# -- the everyday model -----------------------------------------------------------------------


def test_lincae_model_is_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_model() == (DEFAULT_MODEL, "built-in")
    monkeypatch.setenv("LINCAE_MODEL", "lin-cae")
    assert default_model() == ("lin-cae", "LINCAE_MODEL")
    monkeypatch.setenv("LINCAE_MODEL", "no-such-model")
    with pytest.raises(LincaeError, match="LINCAE_MODEL=no-such-model: unknown model"):
        default_model()
    monkeypatch.setenv("LINCAE_MODEL", "  ")
    assert default_model() == (DEFAULT_MODEL, "built-in")


def test_lincae_model_sets_the_encoding_default(tmp_path: Path, tiny_model_path, monkeypatch):
    audio = write_tone(tmp_path / "a.wav", seconds=0.3)
    monkeypatch.setenv("LINCAE_MODEL", str(tiny_model_path))
    done = run_lincae(["encode", str(audio), "-o", str(tmp_path / "a.lat"), *FAST])
    assert done.returncode == 0, done.stderr.decode()
    assert read_lat(tmp_path / "a.lat").meta.model_name == "tiny-test"


def test_models_list_marks_the_default_and_where_it_comes_from(monkeypatch) -> None:
    from typer.testing import CliRunner

    from lincae_cli.cli.app import app

    def listed(env: dict[str, str]) -> tuple[dict, str]:
        runner = CliRunner()
        document = json.loads(runner.invoke(app, ["models", "list", "--json"], env=env).stdout)
        table = runner.invoke(app, ["models", "list"], env={**env, "COLUMNS": "120"}).stdout
        return document, table

    document, table = listed({"LINCAE_MODEL": "m2l-small"})
    assert [row["name"] for row in document["models"] if row["default"]] == ["m2l-small"]
    assert document["default"] == {"model": "m2l-small", "from": "LINCAE_MODEL"}
    assert "default model: m2l-small (from LINCAE_MODEL)" in table
    document, table = listed({"LINCAE_MODEL": ""})
    assert document["default"] == {"model": DEFAULT_MODEL, "from": "built-in"}
    assert f"default model: {DEFAULT_MODEL} (built in" in table


# -- models exported by `lincae train` ----------------------------------------------------------

TRAIN_TOML = """\
name = "lincae-small"

[model]
preset = "tiny"

[train]
total_steps = 2
batch_size = 2
lr = 1e-3
warmup_steps = 1
checkpoint_every = 2
log_every = 1
validate_every = 1000
precision = "fp32"
threads = 1

[data]
crop_frames = 8
valid_clips = 1
valid_seconds = 0.1
"""


def test_a_trained_model_is_named_after_its_run_not_its_preset(tmp_path: Path, cli) -> None:
    import torch

    from lincae_cli.cli.app import main

    (tmp_path / "small.toml").write_text(TRAIN_TOML)
    for split, count in (("train", 2), ("valid", 1)):
        for i in range(count):
            write_tone(tmp_path / "music" / split / f"clip{i}.wav", seconds=0.3, seed=i)
    run_dir = tmp_path / "mine"
    args = ["train", str(tmp_path / "small.toml"), "--data", str(tmp_path / "music")]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--run-dir", str(run_dir), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    export = run_dir / "model.safetensors"
    name = read_model_metadata(export)["name"]
    assert name == "lincae-small-mine"  # the preset is "lincae-small", a shipped model's name

    audio = write_tone(tmp_path / "a.wav", seconds=0.4)
    lat_path = tmp_path / "a.lat"
    result = cli("encode", str(audio), "-o", str(lat_path), "--model", str(export), *FAST)
    assert result.exit_code == 0, result.stderr
    assert read_lat(lat_path).meta.model_name == name
    result = cli("decode", str(lat_path), "-o", str(tmp_path / "x.wav"), *FAST)
    assert result.exit_code == 1 and "not a registered model" in result.stderr
    assert "--model PATH" in result.stderr  # not the shipped lincae-small, whose sha differs
    result = cli("decode", str(lat_path), "-o", str(tmp_path / "b.wav"), "--model", str(export))
    assert result.exit_code == 0, result.stderr


# -- output extensions -------------------------------------------------------------------------


def test_an_unknown_output_extension_is_an_error_not_a_folder(tmp_path: Path, cli) -> None:
    audio = write_tone(tmp_path / "a.wav", seconds=0.3)
    write_lat(tmp_path / "a.lat", synthetic())
    for command, words in [
        (["encode", str(audio), "-o", str(tmp_path / "out.xyz")], "unknown output type '.xyz'"),
        (["encode", str(audio), "-o", str(tmp_path / "out.opus")], "encode writes .lat files"),
        (["decode", str(tmp_path / "a.lat"), "-o", str(tmp_path / "out.xyz")], "'.xyz'"),
        (["gain", str(tmp_path / "a.lat"), "0", "-o", str(tmp_path / "out.xyz")], "'.xyz'"),
    ]:
        result = cli(*command)
        assert result.exit_code == 1 and words in result.stderr, (command, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.xyz").exists() and not (tmp_path / "out.opus").exists()


@pytest.mark.skipif(
    "OPUS" not in sf.available_subtypes("OGG"), reason="this libsndfile writes no Ogg Opus"
)
def test_opus_outputs_are_ogg_opus_at_an_opus_rate(tmp_path: Path, cli) -> None:
    tiny = _tiny_latents(tmp_path, cli)
    assert tiny.meta.source_sample_rate == 44100  # not a rate Opus takes
    result = cli("decode", str(tmp_path / "tone.lat"), "-o", str(tmp_path / "t.opus"), model=True)
    assert result.exit_code == 0, result.stderr
    info = sf.info(tmp_path / "t.opus")
    assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 48000)
    assert info.frames == round(tiny.meta.num_samples * 48000 / 44100)
    result = cli("decode", str(tmp_path / "tone.lat"), "-o", str(tmp_path / "u.opus"),
                 "-r", "44100", model=True)  # fmt: skip
    assert result.exit_code == 1 and "Opus takes 8000, 12000, 16000, 24000, 48000 Hz" in (
        result.stderr
    )
    assert not (tmp_path / "u.opus").exists()


def test_opus_without_libsndfile_support_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    from lincae_cli.batch.single import check_result_output

    monkeypatch.delitem(audio_io.AUDIO_EXTENSIONS, ".opus", raising=False)
    for check in (audio_io.output_container, lambda p: check_result_output(p, "float16", False)):
        with pytest.raises(LincaeError) as caught:
            check(str(tmp_path / "x.opus"))
        message = str(caught.value)
        assert "cannot write Ogg Opus" in message and "libsndfile 1.0.29" in message
        assert "\n" not in message


def test_decoding_bare_latents_records_the_model(tmp_path: Path, cli) -> None:
    """The metadata bare latents get is the model's, as encoding would have written it."""
    from lincae_cli.latents.npy import BareLatents, span_samples

    tiny = _tiny_latents(tmp_path, cli)
    bound = BareLatents(tiny.latents, 44100, "bare.npy").with_model(tiny.meta)
    assert bound.meta.model_sha256 == tiny.meta.model_sha256
    assert bound.meta.num_samples == span_samples(bound.meta, tiny.frames, "bare.npy")
    assert [e["op"] for e in bound.meta.provenance] == ["import"]
    longer = dataclasses.replace(bound.meta, num_samples=bound.meta.num_samples + 512)
    assert longer.expected_frames == tiny.frames + 1  # no sample more is in these frames
