"""Resuming a run from its own record (`lincae train --resume RUN_DIR`), changing
train.total_steps on resume (schedules stretched, or the init_from command for a finished run),
--export-only keeping the training's provenance, and what `lincae train` says at start and at a
pause. Tiny model and data, as in test_training.py."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import stat
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from lincae_training import consistency
from lincae_training.checkpoint import EXPORT_PROVENANCE_NAME
from lincae_training.config import TrainConfig
from lincae_training.schedule import Schedule, cosine_learning_rate
from lincae_training.trainer import learning_rate

from lincae_cli.cli.app import main
from lincae_cli.hub.store import load_model, read_model_metadata
from tests.test_training import (
    TINY_TOML,
    assert_one_line_error,
    assert_states_identical,
    load_state,
    write_clip,
)

LR = 2e-3  # the runs here are started with --set train.lr=2e-3 (the config says 1e-3)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    (root / "tiny.toml").write_text(TINY_TOML)
    for i in range(3):
        write_clip(root / "music" / "train" / f"clip{i}.wav", 0.3, seed=i)
    for i in range(2):
        write_clip(root / "music" / "valid" / f"clip{i}.wav", 0.3, seed=10 + i)
    return root


@pytest.fixture(autouse=True)
def isolated(workspace, monkeypatch):
    monkeypatch.setenv("LINCAE_CACHE", str(workspace / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def lincae(*args: str | Path) -> int:
    """`lincae ARGS` in this process, with sys.argv as the real command would have it (the
    provenance records it)."""
    argv = ["lincae", *map(str, args)]
    saved = sys.argv
    sys.argv = argv
    try:
        return main(argv[1:])
    finally:
        sys.argv = saved


def start(workspace: Path, run_dir: Path, *args: str | Path) -> int:
    """A run of the tiny config started with an override, as a user would start one."""
    config = workspace / "tiny.toml"
    data = workspace / "music"
    return lincae(
        "train", config, "--data", data, "--run-dir", run_dir, "--set", f"train.lr={LR}", *args
    )


def in_module_scope(workspace: Path, body):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LINCAE_CACHE", str(workspace / "cache"))
        threads = torch.get_num_threads()
        try:
            return body()
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paused_run(workspace) -> Path:
    """Started with --set train.lr and paused at step 2 of 6 (copy it before changing it)."""
    run_dir = workspace / "paused"
    assert in_module_scope(workspace, lambda: start(workspace, run_dir, "--steps", "2", "-q")) == 0
    return run_dir


@pytest.fixture(scope="module")
def finished_run(workspace) -> Path:
    """Started with --set train.total_steps=3 and trained to the end, under umask 022."""
    run_dir = workspace / "finished"
    umask = os.umask(0o022)
    try:
        code = in_module_scope(
            workspace, lambda: start(workspace, run_dir, "--set", "train.total_steps=3", "-q")
        )
    finally:
        os.umask(umask)
    assert code == 0
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / name))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- resume from the run's own record ------------------------------------------------------------


def test_resume_needs_only_the_run_dir(workspace, paused_run, tmp_path):
    """Config, overrides and data come from the run: the same path as an unpaused run."""
    straight = tmp_path / "straight"
    assert start(workspace, straight, "--steps", "4", "-q") == 0
    resumed = copy_run(paused_run, tmp_path)
    assert lincae("train", "--resume", resumed, "--steps", "4", "-q") == 0
    assert_states_identical(load_state(straight), load_state(resumed))
    # The long form, with the config file: the run's recorded --set is applied again.
    again = copy_run(paused_run, tmp_path, "again")
    config = workspace / "tiny.toml"
    args = ["train", config, "--run-dir", again, "--resume", "--steps", "4", "-q"]
    assert lincae(*args) == 0
    assert_states_identical(load_state(straight), load_state(again))


def test_the_recorded_config_json_is_a_config(workspace, paused_run):
    recorded = TrainConfig.load(paused_run / "config.json")
    assert recorded == TrainConfig.load(workspace / "tiny.toml", [f"train.lr={LR}"])
    assert TrainConfig.load(paused_run / "config.json", ["train.seed=4"]).train.seed == 4


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--set", "data.crop_frames=16"], "data.crop_frames (8 there, 16 now)"),
        (["--set", "model.cond_channels=16"], "model.cond_channels"),
        (["--batch-size", "4"], "train.batch_size (2 there, 4 now)"),
        (["--set", "train.lr=1e-3"], "train.lr"),
    ],
)
def test_resume_refuses_a_change_that_cannot_happen_mid_run(paused_run, capsys, args, key):
    before = load_state(paused_run)
    assert lincae("train", "--resume", paused_run, *args) == 1
    assert_one_line_error(capsys, key, "can change only train.total_steps")
    assert_states_identical(load_state(paused_run), before)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--data", "music"], 2, "CONFIG is required"),
        (["--resume"], 2, "--run-dir is required"),
        (["--resume", "{empty}"], 1, "no checkpoint to resume"),
        (["--resume", "{empty}/nowhere"], 1, "no such run folder"),
    ],
)
def test_what_is_missing_is_said(tmp_path, capsys, args, code, fragment):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty") for a in args]
    assert lincae("train", *args) == code
    assert_one_line_error(capsys, fragment)


# -- train.total_steps on resume ------------------------------------------------------------------


def test_raising_total_steps_stretches_the_schedules(workspace, tmp_path):
    """A run of 6 steps paused at step 4 and resumed with 10: the schedules go on from where
    they stood at step 4 and end at 10; pausing the extended run changes nothing."""
    paused = tmp_path / "paused"
    assert start(workspace, paused, "--steps", "4", "-q") == 0
    extended = copy_run(paused, tmp_path, "extended")
    assert lincae("train", "--resume", extended, "--set", "train.total_steps=10", "-q") == 0
    provenance = load_model(extended / "model.safetensors").provenance
    assert provenance["steps"] == 10 and provenance["partial"] is False
    assert provenance["train_config"]["train"]["total_steps"] == 10
    assert [knot[0] for knot in provenance["schedule_knots"]] == [4]

    six = TrainConfig.load(workspace / "tiny.toml", [f"train.lr={LR}"])
    records = {r["step"]: r for r in metrics(extended) if r["kind"] == "train"}
    assert sorted(records) == list(range(1, 11))
    # Step index 4 (record 5) is where the run stood: the 6-step schedule's values there.
    assert records[5]["lr"] == learning_rate(4, six)
    assert records[5]["consistency_step"] == consistency.step_size(4 / 6, six.consistency)
    # Then on down to lr_min at step 10, not the jump of a schedule recomputed over 10 steps.
    lrs = [records[step]["lr"] for step in range(5, 11)]
    assert all(a > b > six.train.lr_min for a, b in pairwise(lrs))
    assert (
        learning_rate(4, TrainConfig.load(paused / "config.json", ["train.total_steps=10"]))
        > lrs[0]
    )

    # Paused again at step 7 of the extended run and resumed without any setting.
    twice = copy_run(paused, tmp_path, "twice")
    assert (
        lincae("train", "--resume", twice, "--set", "train.total_steps=10", "--steps", "7", "-q")
        == 0
    )
    assert lincae("train", "--resume", twice, "-q") == 0
    assert_states_identical(load_state(extended), load_state(twice))


def test_a_finished_run_says_how_to_train_on(workspace, finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path)
    assert lincae("train", "--resume", run_dir, "--set", "train.total_steps=5") == 1
    error = assert_one_line_error(capsys, "finished at step 3", "train.init_from=")
    command = shlex.split(error.split("from its weights: ", 1)[1])
    assert command[:2] == ["lincae", "train"] and "train.total_steps=2" in command
    new_run = tmp_path / "new"
    command[command.index("NEW_RUN_DIR")] = str(new_run)
    assert lincae(*command[1:], "-q") == 0
    provenance = load_model(new_run / "model.safetensors").provenance
    assert provenance["steps"] == 2
    source = load_model(run_dir / "model.safetensors")
    assert provenance["initialised_from"]["sha256"] == source.weights_sha256


def test_total_steps_at_or_below_the_step_reached_is_refused(paused_run, capsys):
    assert lincae("train", "--resume", paused_run, "--set", "train.total_steps=2") == 1
    assert_one_line_error(capsys, "train.total_steps = 2 is not above the run's step 2")


# -- export --------------------------------------------------------------------------------------


def test_export_only_keeps_the_training_provenance(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    trained = read_model_metadata(run_dir / "model.safetensors")["provenance"]
    assert "--set train.total_steps=3" in trained["command"]
    assert lincae("train", "--export-only", run_dir, "-q") == 0
    exported = read_model_metadata(run_dir / "model.safetensors")["provenance"]
    for key in ("command", "data", "precision", "commit", "steps", "train_config"):
        assert exported[key] == trained[key], key
    assert exported["re_export"]["command"] == f"lincae train --export-only {run_dir} -q"
    assert json.loads((run_dir / EXPORT_PROVENANCE_NAME).read_text()) == exported


def test_export_only_of_an_older_checkpoint_takes_the_facts_of_its_export(finished_run, tmp_path):
    """A checkpoint without a run record: command, data and precision from export.json."""
    run_dir = copy_run(finished_run, tmp_path)
    trained = read_model_metadata(run_dir / "model.safetensors")["provenance"]
    state = load_state(run_dir)
    del state["run"]
    torch.save(state, run_dir / "checkpoint.pt")
    assert lincae("train", "--export-only", run_dir, "-q") == 0
    exported = read_model_metadata(run_dir / "model.safetensors")["provenance"]
    for key in ("command", "data", "precision"):
        assert exported[key] == trained[key], key


def test_the_model_file_has_the_permissions_of_the_run_files(finished_run):
    def mode(name: str) -> int:
        return stat.S_IMODE((finished_run / name).stat().st_mode)

    assert mode("model.safetensors") == mode("checkpoint.pt") == mode("config.json") == 0o644


# -- what a run says -----------------------------------------------------------------------------


def test_start_warns_of_no_validation_and_of_a_warmup_as_long_as_the_run(
    workspace, tmp_path, capsys
):
    data = tmp_path / "data"
    shutil.copytree(workspace / "music" / "train", data / "train")
    args = ["--set", "train.warmup_steps=6", "--steps", "1", "-q"]
    config = workspace / "tiny.toml"
    assert lincae("train", config, "--data", data, "--run-dir", tmp_path / "run", *args) == 0
    err = capsys.readouterr().err
    assert "lincae: warning: train.warmup_steps (6) is not below train.total_steps (6)" in err
    assert "lincae: warning: the validation split is empty" in err
    assert "Traceback" not in err and "UserWarning" not in err


def test_data_naming_a_file_says_pass_a_folder(workspace, tmp_path, capsys):
    clip = workspace / "music" / "train" / "clip0.wav"
    config = workspace / "tiny.toml"
    assert lincae("train", config, "--data", clip, "--run-dir", tmp_path / "run") == 1
    assert_one_line_error(capsys, str(clip), "pass a folder")


def test_the_pause_message_is_the_command_that_continues(workspace, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert start(workspace, run_dir, "--set", "train.total_steps=3", "--steps", "1") == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("stopped at step 1/3"))
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command == ["lincae", "train", "--resume", str(run_dir)]
    assert lincae(*command[1:], "-q") == 0
    assert load_model(run_dir / "model.safetensors").provenance["steps"] == 3


# -- the schedules, as functions -----------------------------------------------------------------


def test_an_unchanged_schedule_is_the_formula_of_earlier_runs():
    """step / total and the cosine over (step - warmup) / (total - warmup), bit for bit."""
    cfg = TrainConfig.from_dict(
        {"train": {"lr": 1e-3, "lr_min": 1e-5, "warmup_steps": 3, "total_steps": 7}}
    )
    schedule = Schedule(3, 7)
    for step in range(8):
        assert schedule.progress(step) == step / 7
        expected = 1e-3 * step / 3
        if step >= 3:
            phase = min(1.0, (step - 3) / 4)
            expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + math.cos(math.pi * phase))
        assert learning_rate(step, cfg) == expected


@pytest.mark.parametrize("at", [1, 2, 4, 6])
def test_an_extended_schedule_goes_on_from_where_it_stood(at):
    before = Schedule(warmup_steps=2, total_steps=7)
    after = before.extended(at, 12)
    for step in range(at + 1):
        assert after.progress(step) == pytest.approx(before.progress(step), abs=1e-12)
        if step >= 2:
            assert after.phase(step) == pytest.approx(before.phase(step), abs=1e-12)
    assert after.progress(12) == 1.0 and after.phase(12) == 1.0
    assert cosine_learning_rate(12, 1e-3, 1e-5, after) == pytest.approx(1e-5)
    progress = [after.progress(step) for step in range(13)]
    assert progress == sorted(progress)
    again = Schedule.from_json(2, 12, json.loads(json.dumps(after.to_json())))
    assert again == after


def test_extending_twice_at_one_step_keeps_one_knot():
    schedule = Schedule(2, 7).extended(4, 10).extended(4, 12)
    assert [knot.step for knot in schedule.knots] == [4]
    assert schedule.progress(4) == pytest.approx(4 / 7)
