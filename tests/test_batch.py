"""The library's batch layer (lincae_cli/batch/): inputs, output planning, the folder API, and
the pieces of the engine loop it stands on (read-ahead, job states)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lincae_cli.audio.sources import ArraySource
from lincae_cli.batch import BatchResult, Inference, decode_files, encode_files
from lincae_cli.batch.inputs import Failure, InputFile, expand_inputs
from lincae_cli.batch.plan import SKIP, Task, plan_outputs, triage
from lincae_cli.engine.inference import Engine, EngineOptions
from lincae_cli.engine.jobs import JobState
from lincae_cli.engine.runner import read_ahead
from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import load_model
from lincae_cli.latents.latfile import read_lat
from tests.conftest import tone, write_tone

# -- planning: plain data in, plain data out, nothing printed --------------------------------


def test_planning_mirrors_folders_and_reports_problems_without_printing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tone(tmp_path / "music" / "a.wav", 0.1)
    write_tone(tmp_path / "music" / "album" / "b.flac", 0.1)
    write_tone(tmp_path / "loose" / "a.wav", 0.1)
    args = [str(tmp_path / "music"), str(tmp_path / "loose" / "a.wav"), "missing.wav", "-"]
    inputs, failures = expand_inputs(args, {".wav", ".flac"}, "audio")
    assert [item.name for item in inputs][-1] == "<stdin>"
    assert failures == [Failure("missing.wav", "missing.wav: no such file")]
    out = tmp_path / "latents"
    tasks, failures = plan_outputs(inputs, str(out), ".lat", lambda path: path.endswith(".lat"))
    assert [Path(task.output).relative_to(out).as_posix() for task in tasks] == [
        "a.lat",
        "album/b.lat",
    ]
    assert all(task.create_parents for task in tasks)
    # loose/a.wav would land on music/a.wav's output; stdin has no name to mirror.
    assert [failure.name for failure in failures] == [str(tmp_path / "loose" / "a.wav"), "<stdin>"]
    assert "also the output of" in failures[0].message
    assert capsys.readouterr() == ("", "")


def test_triage_existing_outputs(tmp_path: Path) -> None:
    source = write_tone(tmp_path / "a.wav", 0.1)
    (tmp_path / "a.lat").write_bytes(b"old")
    task = Task(InputFile(source), str(tmp_path / "a.lat"))
    refused = triage(task, force=False, skip_existing=False)
    assert isinstance(refused, Failure) and "already exists (use --force" in refused.message
    assert triage(task, force=False, skip_existing=True) == SKIP
    assert triage(task, force=True, skip_existing=False) is None
    onto_itself = triage(Task(InputFile(source), str(source)), force=True, skip_existing=False)
    assert isinstance(onto_itself, Failure) and "overwrite its own input" in onto_itself.message
    nested = str(tmp_path / "no" / "dir" / "a.lat")
    assert isinstance(triage(Task(InputFile(source), nested), False, False), Failure)
    assert triage(Task(InputFile(source), nested, create_parents=True), False, False) is None


# -- the folder API ----------------------------------------------------------------------------


def test_encode_and_decode_folders_from_python(tmp_path: Path, tiny_model_path: Path) -> None:
    write_tone(tmp_path / "music" / "a.wav", 0.3, seed=1)
    write_tone(tmp_path / "music" / "album" / "b.flac", 0.4, 22050, channels=2, seed=2)
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32", chunk_seconds=0.5))
    seen: list[str] = []
    result = BatchResult("encode", on_record=lambda record: seen.append(record["status"]))
    encode_files([tmp_path / "music"], str(tmp_path / "lat"), inference=inference, result=result)
    assert result.count("ok") == 2 and seen == ["ok", "ok"]
    assert result.info["model"] == "tiny-test"
    lat = read_lat(tmp_path / "lat" / "album" / "b.lat")
    assert (lat.channels, lat.meta.source_sample_rate) == (2, 22050)
    again = encode_files(
        [str(tmp_path / "music")], str(tmp_path / "lat"), inference=inference, skip_existing=True
    )
    assert [record["status"] for record in again.records] == ["skipped", "skipped"]

    decoded = decode_files(
        [str(tmp_path / "lat")], str(tmp_path / "audio"), inference=inference, file_format="flac"
    )
    assert decoded.count("ok") == 2 and decoded.audio_seconds == pytest.approx(0.7)
    info = soundfile.info(tmp_path / "audio" / "album" / "b.flac")
    assert (info.channels, info.samplerate, info.frames) == (2, 22050, round(0.4 * 22050))


def test_an_unreadable_input_fails_alone(tmp_path: Path, tiny_model_path: Path) -> None:
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    inference = Inference(str(tiny_model_path), EngineOptions(precision="fp32"))
    result = encode_files([str(tmp_path / "noise.wav")], inference=inference)
    assert [record["status"] for record in result.records] == ["failed"]
    assert "cannot read audio" in result.records[0]["error"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["noise.wav"]


def test_the_folder_api_refuses_bad_arguments_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(LincaeError, match="encode writes .lat files"):
        encode_files([str(tmp_path)], str(tmp_path / "x.wav"))
    with pytest.raises(LincaeError, match="--format mp4"):
        decode_files([str(tmp_path)], file_format="mp4")
    with pytest.raises(LincaeError, match="--dtype"):
        encode_files([str(tmp_path)], dtype="int8")


# -- the loop's pieces -------------------------------------------------------------------------


def test_read_ahead_passes_items_and_raises_what_the_producer_raises() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("reader bug")

    feed = read_ahead(items(), depth=1)
    assert [next(feed), next(feed)] == [1, 2]
    with pytest.raises(RuntimeError, match="reader bug"):
        next(feed)


def test_read_ahead_stops_its_producer_when_closed() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        for index in range(10**9):
            produced.append(index)
            yield index

    threads = threading.active_count()
    feed = read_ahead(endless(), depth=2)
    assert next(feed) == 0
    feed.close()
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 4  # bounded read-ahead, and nothing after closing
    assert threading.active_count() == threads


def test_a_failed_or_aborted_job_leaves_no_output(tmp_path: Path, tiny_model_path: Path) -> None:
    engine = Engine(load_model(tiny_model_path).optimize_for_inference("fp32"))
    lat = next(iter(engine.run([engine.encode_job(ArraySource("a", tone(0.5), 44100))]))).result
    target = tmp_path / "out.wav"
    job = engine.decode_job(lat, str(target))
    assert job.state is JobState.OPEN
    job.sink.write(np.zeros((1, 4096), np.float32))  # something was streamed already
    job.fail(LincaeError("disk full"))
    assert job.state is JobState.FAILED and str(job.error) == "disk full"
    assert list(tmp_path.iterdir()) == []
    job.abort()  # a failed job stays failed
    assert job.state is JobState.FAILED
    aborted = engine.decode_job(lat, str(target))
    aborted.abort()
    assert aborted.state is JobState.ABORTED and list(tmp_path.iterdir()) == []
