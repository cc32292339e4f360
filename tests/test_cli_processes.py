"""The real command line in subprocesses: pipelines over stdin/stdout, torchrun sharding,
interruptions."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lincae_cli.latents.latfile import read_lat
from tests.conftest import FAST, lincae_process, run_lincae, write_tone


def test_pipeline_encode_gain_decode(tmp_path: Path, tiny_model_path: Path) -> None:
    source = write_tone(tmp_path / "x.wav", 0.5, 48000, channels=2)
    model = ["--model", str(tiny_model_path), *FAST]
    encode = lincae_process(["encode", str(source), "-o", "-", *model], stdout=subprocess.PIPE)
    gain = lincae_process(
        ["gain", "-", "-6dB", "-o", "-"], stdin=encode.stdout, stdout=subprocess.PIPE
    )
    decode = lincae_process(
        ["decode", "-", "-o", "-", *model],
        stdin=gain.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert encode.stdout is not None and gain.stdout is not None
    encode.stdout.close()  # the next process owns the pipe now
    gain.stdout.close()
    wav, errors = decode.communicate(timeout=600)
    assert [encode.wait(), gain.wait(), decode.returncode] == [0, 0, 0], errors
    audio, rate = soundfile.read(io.BytesIO(wav), always_2d=True)
    assert rate == 48000 and audio.shape == (24000, 2)
    assert np.isfinite(audio).all()

    # The same chain, to files, and each step is what the in-process commands give.
    lat = tmp_path / "x.lat"
    assert run_lincae(["encode", str(source), "-o", str(lat), *model]).returncode == 0
    piped = run_lincae(["gain", "-", "-6dB", "-o", "-"], input=lat.read_bytes())
    assert piped.returncode == 0, piped.stderr
    gained = read_lat(io.BytesIO(piped.stdout))
    assert [entry["op"] for entry in gained.meta.provenance] == ["encode", "gain"]
    np.testing.assert_allclose(gained.latents, read_lat(lat).latents * 10 ** (-6 / 20), rtol=1e-3)


def test_errors_in_a_real_process_are_one_line(tmp_path: Path) -> None:
    result = run_lincae(["decode", str(tmp_path / "missing.lat"), "--model", "x.safetensors"])
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[0].startswith("lincae: error:")
    assert b"Traceback" not in result.stderr
    usage = run_lincae(["encode"])  # missing argument: click's usage error
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr


def _rank_summaries(log_dir: Path) -> list[dict[str, object]]:
    summaries = []
    for log in sorted(log_dir.rglob("stdout.log")):
        text = log.read_text()
        summaries.append(json.loads(text[text.index("{") :]))
    return summaries


def test_torchrun_shards_inputs_across_two_processes(tmp_path: Path, tiny_model_path: Path) -> None:
    names = [f"clip{i}.wav" for i in range(5)]
    for i, name in enumerate(names):
        write_tone(tmp_path / "in" / name, 0.2 + 0.05 * i, seed=i)
    model = ["--model", str(tiny_model_path), *FAST]

    def torchrun(log_dir: Path, *args: str) -> list[dict[str, object]]:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--log-dir",
            str(log_dir),
            "--redirects",
            "1",
            "-m",
            "lincae_cli.cli.app",
            *args,
            "--json",
            *model,
        ]
        done = subprocess.run(launch, capture_output=True, timeout=900)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return _rank_summaries(log_dir)

    encoded = torchrun(
        tmp_path / "logs-encode", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "lat")
    )
    assert sorted(s["rank"] for s in encoded) == [0, 1]
    shares = [sorted(Path(str(f["input"])).name for f in s["files"]) for s in encoded]  # type: ignore[union-attr]
    assert all(shares) and sorted(shares[0] + shares[1]) == names  # disjoint, complete
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == [
        n.replace(".wav", ".lat") for n in names
    ]

    decoded = torchrun(
        tmp_path / "logs-decode", "decode", str(tmp_path / "lat"), "-o", str(tmp_path / "out")
    )
    assert sum(s["ok"] for s in decoded) == 5 and all(s["ok"] for s in decoded)  # type: ignore[misc]
    for i, name in enumerate(names):
        assert soundfile.info(tmp_path / "out" / name).frames == round((0.2 + 0.05 * i) * 44100)


@pytest.mark.slow
def test_ctrl_c_during_decode_leaves_no_output(tmp_path: Path, tiny_model_path: Path) -> None:
    write_tone(tmp_path / "long.wav", 6.0)
    model = ["--model", str(tiny_model_path), *FAST]
    assert run_lincae(["encode", str(tmp_path / "long.wav"), *model]).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    process = lincae_process(
        ["decode", str(tmp_path / "long.lat"), "-o", str(out / "long.flac"), *model],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    while not list(out.iterdir()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # wait until the output is being written
    assert process.poll() is None, "decode finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=600)
    assert process.returncode == 130, errors
    assert b"interrupted" in errors and b"Traceback" not in errors
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_killed_encode_never_leaves_a_half_written_lat(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    for i in range(6):
        write_tone(tmp_path / "in" / f"{i}.wav", 1.0, seed=i)
    out = tmp_path / "out"
    process = lincae_process(
        ["encode", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_path), *FAST]
    )
    deadline = time.monotonic() + 600
    while not (out.exists() and list(out.glob("*.lat"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    finished = list(out.glob("*.lat"))
    assert finished  # killed mid-batch
    for path in finished:
        read_lat(path)  # every visible output is complete
