"""The manifest of an encoded catalogue (batch/manifest.py, batch/catalogue.py, `lincae
manifest`): lines that a crash cannot tear into something unreadable, merge and check, and a
torchrun launch with a rank killed by SIGKILL that a rerun with --skip-existing completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lincae_cli.atomic import AtomicFile
from lincae_cli.batch import Inference, encode_files
from lincae_cli.batch.catalogue import check_manifest, merge_manifest
from lincae_cli.batch.manifest import PARTS_FOLDER, PartWriter, merge_lines, read_lines
from lincae_cli.engine.inference import EngineOptions
from lincae_cli.errors import LincaeError
from lincae_cli.latents.latfile import read_lat
from tests.conftest import FAST, write_tone

BIN = Path(sys.executable).parent

# -- lines --------------------------------------------------------------------------------------


def test_each_line_is_one_write_and_a_torn_line_stays_one_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    writer = PartWriter(tmp_path, "a.0", 3)
    writer.append({"input": "x.wav", "output": "x.lat", "status": "ok", "frames": 2})
    writer.append({"input": "y.wav", "status": "failed", "error": "y.wav: no such file"})
    writer.close()
    assert len(writes) == 2 and all(data.endswith(b"\n") for data in writes)
    part = tmp_path / PARTS_FOLDER / "a.0.rank00003.jsonl"
    with open(part, "ab") as handle:  # a crash in the middle of a third line
        handle.write(b'{"input": "z.wav", "sta')
    lines, torn = read_lines(part)
    assert [line["input"] for line in lines] == ["x.wav", "y.wav"] and torn == [3]
    assert lines[0]["rank"] == 3 and lines[0]["attempt"] == "a.0" and "time" in lines[0]

    again = PartWriter(tmp_path, "a.0", 3)  # the rerun's process appends to the same part
    again.append({"input": "z.wav", "output": "z.lat", "status": "ok"})
    again.close()
    lines, torn = read_lines(part)
    assert [line["input"] for line in lines] == ["x.wav", "y.wav", "z.wav"] and torn == [3]


def test_merge_keeps_one_line_per_input() -> None:
    lines = [
        {"input": "a.wav", "output": "a.lat", "status": "ok", "time": "1"},
        {"input": "a.wav", "output": "a.lat", "status": "failed", "error": "e", "time": "2"},
        {"input": "b.wav", "output": "b.lat", "status": "ok", "time": "1"},
        {"input": "b.wav", "output": "b.lat", "status": "ok", "time": "3", "frames": 9},
        {"input": "c.wav", "status": "failed", "error": "c.wav: no such file", "time": "1"},
        {"input": "c.wav", "output": "c.lat", "status": "ok", "time": "2"},
        {"input": "d.wav", "output": "d.lat", "status": "failed", "error": "old", "time": "1"},
        {"input": "d.wav", "output": "d.lat", "status": "failed", "error": "new", "time": "2"},
    ]
    merged = merge_lines(lines)
    assert [(line["input"], line["status"]) for line in merged] == [
        ("a.wav", "ok"),  # a success beats a later failure (the file is still there)
        ("b.wav", "ok"),
        ("c.wav", "ok"),  # the missing input was added and done since
        ("d.wav", "failed"),
    ]
    assert merged[1]["frames"] == 9 and merged[3]["error"] == "new"


# -- merge and check ----------------------------------------------------------------------------


@pytest.fixture
def catalogue(tmp_path: Path, tiny_model_path: Path) -> Path:
    for i in range(4):
        write_tone(tmp_path / "music" / f"album{i % 2}" / f"{i}.wav", 0.2 + 0.1 * i, seed=i)
    (tmp_path / "music" / "broken.wav").write_bytes(b"RIFF but not audio")
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32", chunk_seconds=0.5))
    out = tmp_path / "lat"
    result = encode_files([tmp_path / "music"], str(out), inference=inference, manifest=True)
    assert result.count("ok") == 4 and result.count("failed") == 1
    return out


def test_merge_and_check_a_catalogue(catalogue: Path, cli: Callable[..., object]) -> None:
    (part,) = (catalogue / PARTS_FOLDER).glob("*.jsonl")
    with open(part, "ab") as handle:
        handle.write(b'{"input": "torn')  # the process died while writing this line
    merged = cli("manifest", str(catalogue), "--json")
    assert merged.exit_code == 1  # broken.wav failed  # type: ignore[attr-defined]
    report = json.loads(merged.stdout)  # type: ignore[attr-defined]
    assert report["ok"] == 4 and report["torn_lines"] == [f"{part}:6"]
    assert report["failed"] == 1 and report["error"].startswith("catalogue incomplete")
    assert [f["input"].endswith("broken.wav") for f in report["files"]] == [True]
    assert "broken.wav: cannot read audio" in merged.stderr  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in (catalogue / "manifest.jsonl").read_text().splitlines()]
    assert [line["output"] for line in lines] == [
        "album0/0.lat",
        "album0/2.lat",
        "album1/1.lat",
        "album1/3.lat",
        "broken.lat",
    ]
    line = lines[1]
    lat = read_lat(catalogue / "album0" / "2.lat")
    assert line["frames"] == lat.frames and line["channels"] == 1 and line["sample_rate"] == 44100
    assert line["duration_seconds"] == pytest.approx(0.4)
    assert line["model"] == "tiny-test" and line["model_sha256"] == lat.meta.model_sha256
    assert {"loudness_lufs", "lincae_version", "input"} <= line.keys()
    assert check_manifest(catalogue).corrupt == []

    (catalogue / "album0" / "0.lat").unlink()
    data = (catalogue / "album1" / "1.lat").read_bytes()
    (catalogue / "album1" / "1.lat").write_bytes(data[: len(data) - 10])
    (catalogue / "stray.lat").write_bytes((catalogue / "album1" / "3.lat").read_bytes())
    checked = cli("manifest", str(catalogue), "--check", "--json")
    assert checked.exit_code == 1  # type: ignore[attr-defined]
    report = json.loads(checked.stdout)  # type: ignore[attr-defined]
    assert report["missing"] == ["album0/0.lat"] and report["extra"] == ["stray.lat"]
    assert len(report["corrupt"]) == 1 and "1.lat: truncated" in report["corrupt"][0]
    assert not report["stale"] and not report["complete"]


def test_a_copied_catalogue_checks_without_its_parts(catalogue: Path, tmp_path: Path) -> None:
    merge_manifest(catalogue)
    copy = tmp_path / "copy"
    shutil.copytree(catalogue, copy, ignore=shutil.ignore_patterns(PARTS_FOLDER))
    report = check_manifest(copy)
    assert not report.stale and not report.missing and not report.extra and not report.corrupt
    assert [Path(line["input"]).name for line in report.failed] == ["broken.wav"]


def test_inputs_planned_but_never_reported_are_pending(catalogue: Path) -> None:
    (part,) = (catalogue / PARTS_FOLDER).glob("*.jsonl")
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(line for line in lines if b'"album1/1.lat"' not in line))
    report = merge_manifest(catalogue)
    assert report.pending == ["album1/1.lat"] and not report.complete
    assert len(report.lines) == 4


def test_manifest_errors(tmp_path: Path, tiny_model_path: Path, cli: Callable[..., object]) -> None:
    source = write_tone(tmp_path / "a.wav", 0.2)
    with pytest.raises(LincaeError, match="--manifest needs -o FOLDER"):
        encode_files([source], str(tmp_path / "a.lat"), manifest=True)
    result = cli("manifest", str(tmp_path))
    assert result.exit_code == 1 and "no manifest parts" in result.stderr  # type: ignore[attr-defined]
    result = cli("manifest", str(tmp_path), "--check")
    assert "manifest.jsonl: no such file" in result.stderr  # type: ignore[attr-defined]


# -- a rank killed mid-run ----------------------------------------------------------------------


def _children(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(entry))
    return children


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [item[5:] for item in environ if item.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


_SECONDS = (0.3, 1.2, 0.5, 0.9, 0.4)
_needs_proc = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc"
)


def _catalogue_inputs(music: Path) -> list[str]:
    return [write_tone(music / f"{i:02d}.wav", _SECONDS[i % 5], seed=i).name for i in range(30)]


def _torchrun(tmp_path: Path, model: Path, log_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The README's recipe on two CPU processes: encode tmp_path/music into tmp_path/lat."""
    command = [
        *(str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", *extra),
        *("--log-dir", str(log_dir), "--redirects", "1", "--no-python", str(BIN / "lincae")),
        *("encode", str(tmp_path / "music"), "-o", str(tmp_path / "lat"), "--manifest"),
        *("--skip-existing", "--json", "--model", str(model), *FAST),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)


def _kill_rank_1(launch: subprocess.Popen[bytes], out: Path) -> None:
    """SIGKILL rank 1 once it has reported two finished files."""
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and launch.poll() is None:
        parts = list((out / PARTS_FOLDER).glob("*.rank00001.jsonl")) if out.exists() else []
        if parts and parts[0].read_bytes().count(b'"status":"ok"') >= 2:
            victim = next((p for p in _children(launch.pid) if _rank_of(p) == 1), None)
        time.sleep(0.01)
    assert victim is not None, "the launch ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)


def _summaries(log_dir: Path) -> list[dict[str, Any]]:
    """Each rank's --json summary, by attempt and rank."""
    summaries = []
    for log in sorted(log_dir.rglob("stdout.log")):
        text = log.read_text()
        if "{" in text:
            summaries.append(json.loads(text[text.index("{") :]))
    return summaries


def _assert_complete(out: Path, inputs: list[str]) -> None:
    """One valid .lat per input, no temporary file (hidden or not), a complete manifest."""
    outputs = sorted(path.name for path in out.rglob("*") if path.is_file())
    expected = [name.replace(".wav", ".lat") for name in inputs]
    assert [name for name in outputs if name.endswith(".lat")] == expected
    for name in expected:
        read_lat(out / name)
    report = merge_manifest(out)
    assert report.complete, report.to_json()
    assert sorted(Path(line["input"]).name for line in report.lines) == inputs
    assert check_manifest(out).complete


@_needs_proc
def test_a_rank_killed_mid_run_is_finished_by_a_rerun(tmp_path: Path, tiny_model_path: Path):
    inputs = _catalogue_inputs(tmp_path / "music")
    out = tmp_path / "lat"
    launch = _torchrun(tmp_path, tiny_model_path, tmp_path / "logs-1")
    _kill_rank_1(launch, out)
    _, errors = launch.communicate(timeout=300)
    assert launch.returncode != 0, errors.decode()[-2000:]
    survivors = {path.name: path.stat().st_ino for path in out.glob("[!.]*.lat")}
    assert 2 <= len(survivors) < len(inputs) - 1, "killed too late to leave work undone"
    for name in survivors:
        read_lat(out / name)  # whatever is visible is complete
    # A kill inside a write (a window of a millisecond, which no timing hits reliably) leaves
    # a temporary file and a torn line: add both as such a kill leaves them.
    unfinished = next(name for name in inputs if name.replace(".wav", ".lat") not in survivors)
    AtomicFile(out / unfinished.replace(".wav", ".lat")).temporary.write_bytes(b"\0" * 99)
    (part,) = (out / PARTS_FOLDER).glob("*.rank00001.jsonl")
    with open(part, "ab") as handle:
        handle.write(b'{"input": "')

    rerun = _torchrun(tmp_path, tiny_model_path, tmp_path / "logs-2")
    _, errors = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, errors.decode()[-3000:]
    summaries = _summaries(tmp_path / "logs-2")
    assert sum(s["ok"] for s in summaries) == len(inputs) - len(survivors)  # nothing redone
    assert sum(s["skipped"] for s in summaries) == len(survivors)
    for name, inode in survivors.items():
        assert (out / name).stat().st_ino == inode
    # The unfinished work was dealt to both ranks again, balanced by duration.
    seconds = [s["audio_seconds"] for s in summaries]
    assert min(seconds) > 0 and max(seconds) <= sum(seconds) / 2 + max(_SECONDS)
    _assert_complete(out, inputs)
    assert len(merge_manifest(out).torn) == 1


@_needs_proc
def test_torchrun_restarts_finish_the_catalogue(tmp_path: Path, tiny_model_path: Path):
    inputs = _catalogue_inputs(tmp_path / "music")
    launch = _torchrun(tmp_path, tiny_model_path, tmp_path / "logs", "--max-restarts", "1")
    _kill_rank_1(launch, tmp_path / "lat")
    _, errors = launch.communicate(timeout=600)
    assert launch.returncode == 0, errors.decode()[-3000:]
    # Rank 0 may finish its share (and print its summary) before rank 1 is killed: the restarted
    # attempt is the one that must finish the catalogue, on both ranks.
    (last,) = sorted(tmp_path.joinpath("logs").glob("*/attempt_*"))[-1:]
    assert last.name == "attempt_1"
    restarted = _summaries(last)
    assert len(restarted) == 2 and all(s["ok"] and s["skipped"] for s in restarted)
    _assert_complete(tmp_path / "lat", inputs)
