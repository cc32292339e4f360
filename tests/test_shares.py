"""torchrun shares (engine/shard.py, batch/shares.py): balanced by seconds of audio read from
headers, the same on every rank, and after a crash only the unfinished work is dealt again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lincae_cli.atomic import AtomicFile, partial_files
from lincae_cli.batch import BatchResult, Inference, encode_files
from lincae_cli.batch.catalogue import merge_manifest
from lincae_cli.batch.durations import input_seconds
from lincae_cli.batch.inputs import InputFile
from lincae_cli.batch.manifest import PARTS_FOLDER, read_parts
from lincae_cli.engine.inference import EngineOptions
from lincae_cli.engine.shard import assign_shares, shard_info
from lincae_cli.latents.latfile import read_lat
from tests.conftest import write_tone


def _loads(costs: list[float], owners: list[int], world_size: int) -> list[float]:
    loads = [0.0] * world_size
    for cost, owner in zip(costs, owners, strict=True):
        loads[owner] += cost
    return loads


# -- the assignment ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(0, 7200, allow_nan=False), max_size=200),
    world_size=st.integers(1, 17),
)
def test_any_list_is_partitioned_the_same_way_with_the_lpt_bound(costs, world_size):
    owners = assign_shares(costs, world_size)
    assert owners == assign_shares(list(costs), world_size)  # what every rank computes
    assert all(0 <= owner < world_size for owner in owners) and len(owners) == len(costs)
    if costs:
        loads = _loads(costs, owners, world_size)
        mean = sum(costs) / world_size
        # Longest processing time first: within one item of the mean (plus the cost floor).
        bound = mean + (1 - 1 / world_size) * max(costs) + 1e-3 * len(costs) + 1e-6
        assert max(loads) <= bound


_JINGLES = st.floats(0.5, 30)
_SONGS = st.floats(120, 480)
_LONG = st.floats(600, 1800)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), world_size=st.integers(2, 16))
def test_a_mixed_corpus_is_balanced_within_ten_percent(data, world_size):
    count = data.draw(st.integers(40 * world_size, 60 * world_size))
    durations = data.draw(
        st.lists(st.one_of(_JINGLES, _SONGS, _SONGS, _LONG), min_size=count, max_size=count)
    )
    mean = sum(durations) / world_size
    # "Mixed" as in a catalogue: no single file is a tenth of a rank's share (docs/scale.md).
    assume(max(durations) <= 0.1 * mean)
    loads = _loads(durations, assign_shares(durations, world_size), world_size)
    assert max(loads) <= 1.1 * mean
    assert min(loads) >= 0.9 * mean


def test_a_catalogue_on_64_ranks() -> None:
    rng = np.random.default_rng(0)
    durations = list(np.clip(rng.lognormal(np.log(200), 0.8, 20_000), 1, 3600))
    loads = _loads(durations, assign_shares(durations, 64), 64)
    mean = sum(durations) / 64
    assert max(loads) / mean < 1.001


def test_ties_and_unreadable_inputs_are_spread_in_input_order() -> None:
    assert assign_shares([0.0] * 5, 2) == [0, 1, 0, 1, 0]
    assert assign_shares([float("nan"), 3.0, -1.0], 2) == [1, 0, 1]


# -- costs from headers -------------------------------------------------------------------------


def test_durations_come_from_headers(tmp_path: Path, tiny_model_path: Path) -> None:
    a = write_tone(tmp_path / "a.wav", 1.5)
    b = write_tone(tmp_path / "b.flac", 0.2, 22050, channels=2)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    items = [InputFile(a), InputFile(b), InputFile(tmp_path / "bad.wav"), InputFile(None)]
    assert input_seconds(items) == pytest.approx([1.5, 0.2, 0.0, 0.0])
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32", chunk_seconds=0.5))
    encode_files([a], str(tmp_path / "a.lat"), inference=inference)
    # A .lat costs what it records (its header only is read), not its size.
    assert input_seconds([InputFile(tmp_path / "a.lat")]) == pytest.approx([1.5])


# -- stale partial files ----------------------------------------------------------------------


def test_partial_files_are_found_by_target(tmp_path: Path) -> None:
    kept = AtomicFile(tmp_path / "song.v2.lat")
    kept.temporary.write_bytes(b"half")
    for name in (".hidden", "a.partial.lat", ".song.v2.lat", ".x.partial.lat"):
        (tmp_path / name).write_bytes(b"")
    assert partial_files(tmp_path) == {tmp_path / "song.v2.lat": [kept.temporary]}
    assert partial_files(tmp_path / "missing") == {}


# -- ranks of one launch, in one process ------------------------------------------------------


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, attempt: str) -> None:
    """torchrun's variables for ``rank`` of 2 (one local process, so threads stay as they are)."""
    for key, value in {
        "RANK": rank,
        "WORLD_SIZE": 2,
        "LOCAL_RANK": 0,
        "LOCAL_WORLD_SIZE": 1,
        "TORCHELASTIC_RUN_ID": attempt,
        "TORCHELASTIC_RESTART_COUNT": 0,
    }.items():
        monkeypatch.setenv(key, str(value))


def test_a_resumed_launch_deals_only_the_unfinished_work_again(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = [0.2, 0.9, 0.3, 0.6, 0.25, 0.5, 0.35, 0.8, 0.4, 0.7]
    for i, length in enumerate(seconds):
        write_tone(tmp_path / "in" / f"{i:02d}.wav", length, seed=i)
    out = tmp_path / "out"
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32", chunk_seconds=0.5))

    def launch(rank: int, attempt: str) -> BatchResult:
        _as_rank(monkeypatch, rank, attempt)
        assert shard_info().attempt == f"{attempt}.0"
        return encode_files(
            [tmp_path / "in"], str(out), inference=inference, skip_existing=True, manifest=True
        )

    first = [launch(rank, "first") for rank in (0, 1)]
    loads = [r.audio_seconds for r in first]
    assert sum(loads) == pytest.approx(sum(seconds))
    assert max(loads) <= 0.55 * sum(seconds)  # balanced by duration, not by count

    # Rank 1 "was killed": its last two outputs never written, the one before written but
    # its line torn, and a temporary file left behind.
    part = out / PARTS_FOLDER / "first.0.rank00001.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    unfinished = [json.loads(line)["output"] for line in lines[-3:]]
    part.write_bytes(b"".join(lines[:-3]) + lines[-3][:20])
    for output in unfinished[1:]:
        (out / output).unlink()
    AtomicFile(out / unfinished[1]).temporary.write_bytes(b"half a file")
    inodes = {path.name: path.stat().st_ino for path in out.glob("[!.]*.lat")}

    second = [launch(rank, "second") for rank in (0, 1)]
    plans = read_parts(out).plans
    shares = [plan["outputs"] for plan in plans if plan["attempt"] == "second.0"]
    assert sorted(output for share in shares for _, output in share) == sorted(unfinished)
    assert all(shares)  # the unfinished work was dealt to both ranks again
    redone = sorted(
        Path(r["output"]).name for res in second for r in res.records if r["status"] == "ok"
    )
    assert redone == sorted(unfinished[1:])
    assert sum(res.count("skipped") for res in second) == len(seconds) - 2
    for name, inode in inodes.items():
        assert (out / name).stat().st_ino == inode  # finished work left alone
    outputs = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    assert outputs == [f"{i:02d}.lat" for i in range(len(seconds))]
    assert not list(out.glob(".*.partial*"))
    for path in out.glob("[!.]*.lat"):
        read_lat(path)
    report = merge_manifest(out)
    assert report.complete and len(report.ok) == len(seconds)
    assert report.torn == [f"{part}:{len(lines) - 2}"]
