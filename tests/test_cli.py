"""The `lincae` commands through Typer's runner (in-process): behaviour, errors, safety."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from lincae_cli.cli.ops import ResultArgs
from lincae_cli.cli.options import AudioOutputArgs, DecodeEngineArgs, with_option_groups
from lincae_cli.latents.latfile import read_lat
from tests.conftest import FAST, write_tone

Run = Callable[..., Any]


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


def _one_line_error(result: Any, *fragments: str) -> str:
    """Exit code 1, no traceback, and an error line containing every fragment."""
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lincae: error:")]
    assert any(all(f in line for f in fragments) for line in lines), result.stderr
    return result.stderr


# -- the basics -----------------------------------------------------------------------------


def test_version_and_help_with_examples_everywhere(cli: Run) -> None:
    import lincae_cli

    assert _ok(cli("--version")).stdout.strip() == f"lincae {lincae_cli.__version__}"
    top = _ok(cli("--help")).stdout
    for command in ("encode", "decode", "mix", "gain", "subtract", "info", "models"):
        assert command in top
        assert "Examples" in _ok(cli(command, "--help")).stdout, command
    for sub in ("list", "pull", "path"):
        assert "Examples" in _ok(cli("models", sub, "--help")).stdout
    assert "--install-completion" in top  # shell completion
    # Rich markup must not eat bracketed extras such as lincae[plots].
    assert "lincae[plots]" in _ok(cli("eval", "--help")).stdout.replace("\n", "")


def test_option_groups_are_options_of_their_own_and_reach_the_command_as_one() -> None:
    import inspect

    import typer
    from typer.testing import CliRunner

    received = []

    def command(name: str, result_args: ResultArgs = ResultArgs()) -> None:
        received.append((name, result_args))

    spread = with_option_groups(command)
    names = list(inspect.signature(spread).parameters)
    assert names[:4] == ["name", "force", "dtype", "sample_rate"] and "seed" in names
    app = typer.Typer()
    app.command()(spread)
    result = CliRunner().invoke(app, ["x", "-f", "--subtype", "pcm_24", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    expected = ResultArgs(
        force=True,
        audio=AudioOutputArgs(subtype="pcm_24"),
        engine=DecodeEngineArgs(seed=3),
        json_output=True,
    )
    assert received == [("x", expected)]


def test_encode_then_decode_restores_length_rate_and_channels(cli: Run, tmp_path: Path) -> None:
    song = write_tone(tmp_path / "song.flac", 0.45, 48000, channels=2)
    _ok(cli("encode", str(song), model=True))
    lat = read_lat(tmp_path / "song.lat")  # default output: beside the input
    assert (lat.channels, lat.meta.source_sample_rate, lat.meta.num_samples) == (2, 48000, 21600)
    assert lat.latents.shape[1] == 64 and lat.meta.source_loudness_lufs is not None
    assert lat.meta.chunking["chunk_frames"] == 5
    _ok(cli("decode", str(tmp_path / "song.lat"), "--subtype", "FLOAT", model=True))
    info = soundfile.info(tmp_path / "song.wav")
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (21600, 48000, 2, "FLOAT")
    _ok(
        cli(
            "decode",
            str(tmp_path / "song.lat"),
            "-o",
            str(tmp_path / "x.ogg"),
            "-r",
            "22050",
            model=True,
        )
    )
    assert soundfile.info(tmp_path / "x.ogg").samplerate == 22050


@pytest.mark.parametrize("sample_rate", [8000, 96000])
def test_odd_sample_rates(cli: Run, tmp_path: Path, sample_rate: int) -> None:
    clip = write_tone(tmp_path / "clip.wav", 0.3, sample_rate, subtype="PCM_24")
    _ok(cli("encode", str(clip), "-o", str(tmp_path / "clip.lat"), model=True))
    lat = read_lat(tmp_path / "clip.lat")
    # 0.3 s is 13230 samples at 44.1 kHz: 22 STFT frames, 3 latent frames (linear-cae framing)
    assert lat.meta.source_sample_rate == sample_rate and lat.frames == 3
    _ok(cli("decode", str(tmp_path / "clip.lat"), "-o", str(tmp_path / "back.wav"), model=True))
    back, rate = soundfile.read(tmp_path / "back.wav")
    assert rate == sample_rate and back.shape == (round(0.3 * sample_rate),)


def test_stdin_and_stdout(cli: Run, tmp_path: Path) -> None:
    data = write_tone(tmp_path / "in.wav", 0.3).read_bytes()
    encoded = _ok(cli("encode", "-", model=True, input=data)).stdout_bytes  # default: stdout
    lat = read_lat(io.BytesIO(encoded))
    assert lat.meta.provenance[0]["input"] == "<stdin>"
    decoded = _ok(cli("decode", "-", "-o", "-", model=True, input=encoded)).stdout_bytes
    audio, rate = soundfile.read(io.BytesIO(decoded))
    assert rate == 44100 and audio.shape == (13230,)
    listing = json.loads(_ok(cli("info", "-", "--json", input=encoded)).stdout)["files"]
    assert listing[0]["input"] == "<stdin>" and listing[0]["dtype"] == "float16"


# -- batches --------------------------------------------------------------------------------


def _music_folder(root: Path) -> Path:
    write_tone(root / "music" / "a.wav", 0.2, seed=1)
    write_tone(root / "music" / "album" / "b.flac", 0.25, 22050, channels=2, seed=2)
    write_tone(root / "music" / "album" / "deeper" / "c.ogg", 0.2, 48000, seed=3)
    (root / "music" / "notes.txt").write_text("not audio, not picked up from a folder")
    return root / "music"


def test_folder_batch_is_mirrored_and_can_resume(cli: Run, tmp_path: Path) -> None:
    music = _music_folder(tmp_path)
    out = tmp_path / "latents"
    result = _ok(
        cli("encode", str(music), "-o", str(out), "--batch-size", "3", "--json", model=True)
    )
    summary = json.loads(result.stdout)
    assert summary["ok"] == 3 and summary["failed"] == 0
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*.lat"))
    assert made == ["a.lat", "album/b.lat", "album/deeper/c.lat"]
    assert not [p for p in out.rglob(".*")]  # no partial files

    before = (out / "a.lat").stat().st_mtime_ns
    _one_line_error(
        cli("encode", str(music), "-o", str(out), model=True), "already exists", "--force"
    )
    resumed = json.loads(
        _ok(
            cli("encode", str(music), "-o", str(out), "--skip-existing", "--json", model=True)
        ).stdout
    )
    assert resumed["skipped"] == 3 and (out / "a.lat").stat().st_mtime_ns == before
    (out / "album" / "b.lat").unlink()
    resumed = json.loads(
        _ok(
            cli("encode", str(music), "-o", str(out), "--skip-existing", "--json", model=True)
        ).stdout
    )
    assert (resumed["ok"], resumed["skipped"]) == (1, 2)

    decoded = tmp_path / "decoded"
    _ok(cli("decode", str(out), "-o", str(decoded), "--format", "flac", model=True))
    assert sorted(str(p.relative_to(decoded)) for p in decoded.rglob("*.flac")) == [
        "a.flac",
        "album/b.flac",
        "album/deeper/c.flac",
    ]
    assert soundfile.info(decoded / "album" / "b.flac").samplerate == 22050


def test_globs_and_force(cli: Run, tmp_path: Path) -> None:
    for name in ("x1.wav", "x2.wav", "y.wav"):
        write_tone(tmp_path / name, 0.2)
    out = tmp_path / "out"
    _ok(cli("encode", str(tmp_path / "x*.wav"), "-o", str(out), model=True))
    assert sorted(p.name for p in out.iterdir()) == ["x1.lat", "x2.lat"]
    _ok(cli("encode", str(tmp_path / "x*.wav"), "-o", str(out), "--force", model=True))
    _one_line_error(cli("encode", str(tmp_path / "z*.wav"), model=True), "no file matches")


def test_one_bad_file_does_not_stop_the_batch(cli: Run, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_tone(folder / "good.wav", 0.2)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 20)
    soundfile.write(folder / "empty.wav", np.zeros((0, 1), np.float32), 44100)
    bad = np.full((4410, 1), 0.1, np.float32)
    bad[100] = np.inf
    soundfile.write(folder / "inf.wav", bad, 44100, subtype="FLOAT")
    nan = bad.copy()
    nan[100] = np.nan
    soundfile.write(folder / "nan.wav", nan, 44100, subtype="FLOAT")
    result = cli(
        "encode",
        str(folder),
        str(tmp_path / "missing.wav"),
        "-o",
        str(tmp_path / "out"),
        "--json",
        model=True,
    )
    stderr = _one_line_error(result, "corrupt.wav", "cannot read audio")
    _one_line_error(result, "empty.wav", "empty")
    _one_line_error(result, "inf.wav", "NaN or Inf")
    _one_line_error(result, "nan.wav", "NaN or Inf")
    _one_line_error(result, "missing.wav", "no such file")
    assert "5 of 6 failed" in stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.lat"]
    summary = json.loads(result.stdout)
    assert summary["ok"] == 1 and summary["failed"] == 5


def test_bad_latent_inputs(cli: Run, tmp_path: Path, other_model_path: Path) -> None:
    audio = write_tone(tmp_path / "song.wav", 0.2)
    (tmp_path / "song-as.lat").write_bytes(audio.read_bytes())
    (tmp_path / "text.lat").write_text("hello")
    _one_line_error(
        cli("decode", str(tmp_path / "song-as.lat"), model=True), "song-as.lat", "not a .lat file"
    )
    _one_line_error(cli("info", str(tmp_path / "text.lat")), "text.lat", "not a .lat file")
    _one_line_error(
        cli("decode", str(tmp_path / "nope.lat"), model=True), "nope.lat", "no such file"
    )
    _one_line_error(
        cli("gain", str(audio), "-6dB", "-o", str(tmp_path / "g.lat")), "song.wav", "is audio"
    )

    _ok(cli("encode", str(audio), model=True))
    lat = str(tmp_path / "song.lat")
    _one_line_error(
        cli("decode", lat, "--model", str(other_model_path), "-o", str(tmp_path / "x.wav")),
        "encoded with model 'tiny-test'",
    )
    no_model = cli("decode", lat, "-o", str(tmp_path / "y.wav"))
    _one_line_error(no_model, "not a registered model", "--model")  # no --model given


def test_mismatched_latents(cli: Run, tmp_path: Path, other_model_path: Path) -> None:
    write_tone(tmp_path / "short.wav", 0.2)
    write_tone(tmp_path / "long.wav", 0.6)
    _ok(
        cli(
            "encode",
            *(str(tmp_path / n) for n in ("short.wav", "long.wav")),
            model=True,
        )
    )
    _ok(
        cli(
            "encode",
            str(tmp_path / "short.wav"),
            "-o",
            str(tmp_path / "other.lat"),
            "--model",
            str(other_model_path),
            *FAST,
        )
    )
    short, long, other = (str(tmp_path / f"{n}.lat") for n in ("short", "long", "other"))
    out = str(tmp_path / "m.lat")
    _one_line_error(cli("mix", short, long, "-o", out), "different lengths", "pad")
    _one_line_error(cli("subtract", short, other, "-o", out), "different models")
    _ok(cli("mix", short, long, "--pad", "-o", out))
    assert read_lat(out).frames == read_lat(long).frames
    _one_line_error(
        cli("mix", short, long, "--gains", "1", "-o", out, "--force"), "--gains has 1 values"
    )


# -- latent arithmetic ----------------------------------------------------------------------


def test_mix_gain_subtract_are_exact_latent_arithmetic(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.3, seed=1)
    write_tone(tmp_path / "b.wav", 0.3, seed=2)
    _ok(cli("encode", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), model=True))
    a, b = read_lat(tmp_path / "a.lat").latents, read_lat(tmp_path / "b.lat").latents

    def run(*args: str) -> np.ndarray:
        out = tmp_path / "out.lat"
        _ok(cli(*args, "-o", str(out), "--dtype", "float32", "--force"))
        return read_lat(out).latents

    pa, pb = str(tmp_path / "a.lat"), str(tmp_path / "b.lat")
    assert np.array_equal(run("mix", pa, pb), a + b)
    assert np.array_equal(run("gain", pa, "-6dB"), a * 10 ** (-6 / 20))
    assert np.array_equal(run("gain", pa, "+3dB"), a * 10 ** (3 / 20))
    assert np.array_equal(run("gain", pa, "x0.5"), a * 0.5)
    assert np.array_equal(run("gain", pa, "x-1"), -a)
    assert np.array_equal(run("subtract", pa, pb), run("mix", pa, pb, "--gains", "x1,x-1"))
    assert np.array_equal(run("mix", pa, pb, "--gains", "0dB,-6dB"), a + b * 10 ** (-6 / 20))


def test_gain_to_a_loudness_target_without_decoding(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.6)
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))
    source = read_lat(tmp_path / "a.lat")
    measured = source.meta.source_loudness_lufs
    assert measured is not None and not source.meta.loudness_is_estimate
    out = tmp_path / "loud.lat"
    _ok(cli("gain", str(tmp_path / "a.lat"), "--lufs", "-14", "-o", str(out), "--dtype", "float32"))
    result = read_lat(out)
    assert result.meta.source_loudness_lufs == pytest.approx(-14.0)
    assert result.meta.loudness_is_estimate
    factor = 10 ** ((-14 - measured) / 20)
    torch.testing.assert_close(result.latents, source.latents * factor)
    assert result.meta.provenance[-1]["target_lufs"] == -14
    _one_line_error(cli("gain", str(tmp_path / "a.lat"), "-o", str(out)), "GAIN", "--lufs")


def test_info_table_and_json(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.6, channels=2)
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))
    _ok(cli("gain", str(tmp_path / "a.lat"), "-6dB", "-o", str(tmp_path / "g.lat")))
    table = _ok(cli("info", str(tmp_path / "g.lat"))).stdout
    for expected in (
        "tiny-test",
        "44100 Hz",
        "0.600 s",
        "6 frames x 64",  # 0.6 s: 48 STFT frames
        "float16",
        "estimate",
        "encode(a.wav) -> gain(-6.00 dB)",
    ):
        assert expected in table, expected
    (doc,) = json.loads(_ok(cli("info", str(tmp_path / "g.lat"), "--json")).stdout)["files"]
    assert doc["channels"] == 2 and doc["frames"] == 6 and doc["latent_rate_hz"] == 44100 / 4096
    assert [p["op"] for p in doc["provenance"]] == ["encode", "gain"]


def test_ops_decode_when_the_output_is_audio(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "mix.wav", 0.3, seed=1)
    write_tone(tmp_path / "acc.wav", 0.3, seed=2)
    _ok(cli("encode", str(tmp_path / "mix.wav"), str(tmp_path / "acc.wav"), model=True))
    out = tmp_path / "vocals.wav"
    result = _ok(
        cli(
            "subtract",
            str(tmp_path / "mix.lat"),
            str(tmp_path / "acc.lat"),
            "-o",
            str(out),
            "--json",
            model=True,
        )
    )
    assert json.loads(result.stdout)["files"][0]["output"] == str(out)
    assert soundfile.info(out).frames == 13230
    _one_line_error(
        cli("gain", str(tmp_path / "mix.lat"), "2", "-o", str(tmp_path / "x.mp4")),
        "unknown output type",
    )


# -- safety ---------------------------------------------------------------------------------


def test_existing_outputs_are_not_overwritten(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.2)
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))
    target = tmp_path / "copy.lat"
    target.write_bytes(b"precious")
    _one_line_error(
        cli("gain", str(tmp_path / "a.lat"), "1", "-o", str(target)), "copy.lat", "already exists"
    )
    _one_line_error(
        cli("encode", str(tmp_path / "a.wav"), "-o", str(target), model=True), "already exists"
    )
    assert target.read_bytes() == b"precious"
    _ok(cli("gain", str(tmp_path / "a.lat"), "1", "-o", str(target), "--force"))
    assert read_lat(target).frames == 2  # 0.2 s: 14 STFT frames


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write to; as root (which ignores permissions), a read-only mount."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("running as root without mount: cannot make a read-only folder")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder(cli: Run, tmp_path: Path, read_only_dir: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.2)
    _one_line_error(
        cli("encode", str(tmp_path / "a.wav"), "-o", str(read_only_dir / "a.lat"), model=True),
        "a.lat",
        "read-only",
    )
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))
    _one_line_error(
        cli(
            "decode",
            str(tmp_path / "a.lat"),
            "-o",
            str(read_only_dir / "sub" / "a.wav"),
            model=True,
        ),
        "a.wav",
    )
    _one_line_error(
        cli("gain", str(tmp_path / "a.lat"), "1", "-o", str(read_only_dir / "g.lat")), "read-only"
    )


def test_interrupted_decode_leaves_no_file(
    cli: Run, tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lincae_cli.audio import sink
    from lincae_cli.cli.app import main

    write_tone(tmp_path / "a.wav", 1.2)
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))
    target = tmp_path / "a.flac"
    calls = []

    def interrupt_after_first_block(self: Any, block: np.ndarray) -> None:
        calls.append(block.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, block)

    original = sink.AudioSink.write
    monkeypatch.setattr(sink.AudioSink, "write", interrupt_after_first_block)
    code = main(
        [
            "decode",
            str(tmp_path / "a.lat"),
            "-o",
            str(target),
            "--model",
            str(tiny_model_path),
            *FAST,
        ]
    )
    assert code == 130 and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lat", "a.wav"]


def test_clipping_warns_and_limit_or_normalize_fix_it(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lincae_cli.engine.inference import Engine

    write_tone(tmp_path / "a.wav", 0.3)
    _ok(cli("encode", str(tmp_path / "a.wav"), model=True))

    def loud(self: Engine, items: Any) -> np.ndarray:  # a decoder gone loud
        width = self.spec.window_frames * self.config.latent_hop_samples
        return np.full((len(items), width), 1.5, np.float32)

    monkeypatch.setattr(Engine, "_decode_windows", loud)
    lat = str(tmp_path / "a.lat")
    result = _ok(cli("decode", lat, "-o", str(tmp_path / "a1.wav"), model=True))
    assert (
        "lincae: warning:" in result.stderr
        and "clips" in result.stderr
        and "--limit" in result.stderr
    )
    for flag in ("--limit", "--normalize"):
        result = _ok(cli("decode", lat, "-o", str(tmp_path / f"a{flag}.wav"), flag, model=True))
        assert "clips" not in result.stderr
        assert np.abs(soundfile.read(tmp_path / f"a{flag}.wav")[0]).max() <= 1.0


def test_errors_show_tracebacks_only_with_verbose(cli: Run, tmp_path: Path) -> None:
    from lincae_cli.errors import LincaeError

    quiet = cli("info", str(tmp_path / "missing.lat"))
    _one_line_error(quiet, "missing.lat", "no such file")
    loud = cli(
        "--verbose", "gain", str(tmp_path / "missing.lat"), "1", "-o", str(tmp_path / "x.lat")
    )
    assert isinstance(loud.exception, LincaeError)


def test_missing_default_model_gives_the_registry_error(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lincae_cli.hub import download

    monkeypatch.setattr(download, "embedded_weights_dir", lambda: tmp_path / "no-weights")
    write_tone(tmp_path / "a.wav", 0.2)
    _one_line_error(cli("encode", str(tmp_path / "a.wav")), "embedded model 'lincae-small'")


def test_json_summary_goes_to_stderr_when_stdout_carries_data(cli: Run, tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 0.2)
    result = _ok(cli("encode", str(tmp_path / "a.wav"), "-o", "-", "--json", model=True))
    read_lat(io.BytesIO(result.stdout_bytes))
    summary = json.loads(result.stderr[result.stderr.index("{") :])
    assert summary["ok"] == 1 and summary["files"][0]["output"] == "<stdout>"
    _one_line_error(
        cli("encode", str(tmp_path / "a.wav"), str(tmp_path / "a.wav"), "-o", "-", model=True),
        "-o -",
    )


# -- models ---------------------------------------------------------------------------------


def test_models_list_path_and_pull(
    cli: Run, tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.hubserver import FakeHub, isolate_hub_environment

    with FakeHub() as hub:
        hub.add_file("lincae-tests/models", "tiny.safetensors", tiny_model_path.read_bytes())
        isolate_hub_environment(monkeypatch, tmp_path, hub.url)
        rows = json.loads(_ok(cli("models", "list", "--json")).stdout)["models"]
        names = [row["name"] for row in rows]
        assert names[:2] == ["lincae-small", "m2l-small"] and "lin-cae" in names
        assert rows[0]["default"] and not any(row["available"] for row in rows[2:])
        assert "(default)" in _ok(cli("models")).stdout
        places = json.loads(_ok(cli("models", "path", "--json")).stdout)["paths"]
        assert places["lincae_cache"] == str(tmp_path / "lincae-cache")
        assert places["huggingface_cache"] == str(tmp_path / "hf-home" / "hub")

        spec = "hf://lincae-tests/models/tiny.safetensors"
        pulled = Path(_ok(cli("models", "pull", spec)).stdout.strip())
        assert pulled.read_bytes() == tiny_model_path.read_bytes()
        assert hub.count("GET") == 1
        write_tone(tmp_path / "a.wav", 0.2)
        _ok(cli("encode", str(tmp_path / "a.wav"), "--model", spec, *FAST))  # from the cache
        assert hub.count("GET") == 1
        _one_line_error(cli("models", "pull", "no-such-model"), "unknown model")


def test_models_list_fits_80_columns_without_cutting_sources(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    table = _ok(cli("models", "list")).stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80 and "\u2026" not in table
    header = next(line for line in lines if "source" in line)
    column = "".join(line[header.index("source") :] for line in lines[lines.index(header) + 1 :])
    for row in json.loads(_ok(cli("models", "list", "--json")).stdout)["models"]:
        assert "".join(row["source"].split()) in "".join(column.split()), row["source"]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["encode"],
        ["decode"],
        ["mix"],
        ["gain"],
        ["subtract"],
        ["info"],
        ["eval"],
        ["train"],
        ["models"],
        ["models", "list"],
        ["models", "pull"],
        ["models", "path"],
    ],
)
def test_help_shows_metavars_not_python_types(cli: Run, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for python_type in ("<str>", "<bool>", "<int", "<float", "<path>", "<list["):
        assert python_type not in text, (python_type, text)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # e.g. `INPUTS...`, not `{inputs}...`
