"""`lincae train` end to end on a tiny model and tiny synthetic data: overfitting, exact resume,
torchrun, export, and the errors a user sees."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lincae_training import consistency
from lincae_training import trainer as trainer_module
from lincae_training.config import TrainConfig
from lincae_training.data import AudioStore, CropSampler
from lincae_training.trainer import ConsistencyLoss, crop_samples, draw_step_inputs, learning_rate

from lincae_cli.cli.app import main
from lincae_cli.hub.store import load_model, read_model_metadata
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder

RATE = 44100
BIN = Path(sys.executable).parent

TINY_TOML = """\
name = "tiny-test"

[model]
preset = "tiny"

[train]
total_steps = 6
batch_size = 2
lr = 1e-3
warmup_steps = 2
checkpoint_every = 2
log_every = 1
validate_every = 1000
precision = "fp32"
threads = 1

[data]
crop_frames = 8
valid_clips = 2
valid_seconds = 0.1
"""


def write_clip(path: Path, seconds: float, seed: int) -> None:
    """A chirp plus a little noise, different for every seed."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    start = 150.0 + 90.0 * seed
    audio = 0.4 * np.sin(2 * np.pi * start * time * (1.0 + 2.0 * time))
    audio += 0.03 * rng.standard_normal(time.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), RATE)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Config, data folders and a dataset cache shared by the tests of this module."""
    root = tmp_path_factory.mktemp("training")
    (root / "tiny.toml").write_text(TINY_TOML)
    for i in range(3):
        write_clip(root / "music" / "train" / f"clip{i}.wav", 0.3, seed=i)
    for i in range(2):
        write_clip(root / "music" / "valid" / f"clip{i}.wav", 0.3, seed=10 + i)
    return root


@pytest.fixture(autouse=True)
def isolated(workspace, monkeypatch):
    """Dataset cache in the workspace; torch's thread count restored after each test."""
    monkeypatch.setenv("LINCAE_CACHE", str(workspace / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(workspace: Path, run_dir: Path, *args: str, data: Path | None = None) -> int:
    """`lincae train tiny.toml --data DATA --run-dir RUN ...` in this process; exit code."""
    data_args = ["--data", str(data or workspace / "music")]
    return main(
        ["train", str(workspace / "tiny.toml"), *data_args, "--run-dir", str(run_dir), *args]
    )


def assert_one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lincae: error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def load_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def assert_states_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["ema_updates"] == b["ema_updates"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for index, slot in a["optimizer"]["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}"


@pytest.fixture(scope="module")
def paused_run(workspace) -> Path:
    """A run of the tiny config paused at step 2 of 6 (copy it before changing it)."""
    run_dir = workspace / "paused"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LINCAE_CACHE", str(workspace / "cache"))
        assert train(workspace, run_dir, "--steps", "2", "--quiet") == 0
    torch.set_num_threads(threads)
    return run_dir


def copy_run(paused_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(paused_run, tmp_path / "run"))


# -- learning -----------------------------------------------------------------------------------


def overfit(frequencies: list[float], sigma: torch.Tensor | None, max_steps: int) -> list[float]:
    """Train the tiny model on one fixed batch through the training loss; returns the ratios
    loss(start) / loss(now) every 25 steps, stopping once two in a row reach 5.

    The batch is fixed entirely: one 8-frame crop of a loud sine per frequency, and one draw of
    noise and of noise levels from the training distribution (or the levels `sigma`, with the
    teacher one consistency step below). Plain fp32 steps of ConsistencyLoss with RAdam after
    a short warm-up, at the high learning rate an overfitting check can afford.
    """
    train_settings = {"lr": 1e-2, "lr_min": 1e-2, "warmup_steps": 10, "total_steps": max_steps}
    no_augmentation = {"gain": False, "additivity": False}
    cfg = TrainConfig.from_dict(
        {"model": {"preset": "tiny"}, "train": train_settings, "augment": no_augmentation}
    )
    torch.set_num_threads(1)  # restored by the `isolated` fixture
    torch.manual_seed(0)
    model = ConsistencyAutoencoder(cfg.model.build())
    time = torch.arange(crop_samples(model, 8)) / RATE
    audio = torch.stack([0.8 * torch.sin(2 * math.pi * f * time) for f in frequencies])
    loss_module = ConsistencyLoss(model, cfg, None)
    weights = consistency.index_weights(cfg.consistency, model.config)
    batch = draw_step_inputs(audio, 0, 0, cfg, model, weights)
    sigma_next = batch.sigma_next
    if sigma is not None:
        lo, hi = (model.config.sigma_min, model.config.sigma_max)
        rho = model.config.rho
        index = (sigma ** (1 / rho) - lo ** (1 / rho)) / (hi ** (1 / rho) - lo ** (1 / rho))
        step = consistency.step_size(0.0, cfg.consistency)
        sigma_next = consistency.sigma_at((index - step).clamp(min=0.0), model.config)
    else:
        sigma = batch.sigma

    def batch_loss() -> torch.Tensor:
        return loss_module(audio, None, None, sigma, sigma_next, batch.noise).mean()

    with torch.no_grad():
        start = batch_loss().item()
    optimizer = torch.optim.RAdam(model.parameters())
    ratios: list[float] = []
    for step in range(max_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = batch_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            with torch.no_grad():
                ratios.append(start / batch_loss().item())
            if len(ratios) >= 2 and min(ratios[-2:]) >= 5.0:
                break
    return ratios


def test_tiny_model_overfits_a_fixed_batch():
    """Two clips at sigma = 1: the loss falls 5x within 150 steps (about 50 in practice).

    At sigma around sigma_data the loss is dominated by fitting the clips themselves. Below
    sigma = 0.1 it is about ‖noise‖ until the network has learnt to remove noise of a few per
    cent of the signal, which takes a few hundred steps more (the slow test below).
    """
    ratios = overfit([440.0, 1000.0], torch.tensor([1.0, 1.0]), max_steps=150)
    assert min(ratios[-2:]) >= 5.0, ratios


@pytest.mark.slow
def test_tiny_model_overfits_a_fixed_batch_at_training_noise_levels():
    """Four noise draws of the training distribution (sigma 0.09 to 1.1): 5x within 500 steps."""
    ratios = overfit([440.0] * 4, None, max_steps=500)
    assert min(ratios[-2:]) >= 5.0, ratios


def test_learning_rate_warms_up_then_decays_to_lr_min():
    cfg = TrainConfig.from_dict(
        {"train": {"lr": 1e-3, "lr_min": 1e-5, "warmup_steps": 10, "total_steps": 110}}
    )
    assert learning_rate(0, cfg) == 0.0
    assert learning_rate(5, cfg) == pytest.approx(5e-4)
    assert learning_rate(10, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(110, cfg) == pytest.approx(1e-5)


def test_crops_are_replayable_and_never_silent():
    # One clip: 1 s of silence, then 0.2 s of tone; crops of 0.1 s.
    audio = np.zeros(26460, np.int16)
    audio[22050:] = (3000 * np.sin(np.arange(4410) * 0.05)).astype(np.int16)
    store = AudioStore(audio, np.array([0, audio.size]), ["clip"])
    sampler = CropSampler(store, crop_samples=4410, rms_threshold=0.001, seed=7)
    crops = sampler.batch(3, range(16))
    assert crops.shape == (16, 4410) and crops.dtype == np.float32
    assert (np.sqrt((crops**2).mean(axis=1)) >= 0.001).all()  # 80% of starts are rejected
    assert np.array_equal(crops, CropSampler(store, 4410, 0.001, seed=7).batch(3, range(16)))
    assert not np.array_equal(crops, sampler.batch(4, range(16)))


# -- exact resume, torchrun, export ------------------------------------------------------------


def test_resume_is_bit_exact(workspace, paused_run, tmp_path):
    straight = tmp_path / "straight"
    assert train(workspace, straight, "--steps", "4", "--quiet") == 0
    resumed = copy_run(paused_run, tmp_path)
    assert train(workspace, resumed, "--steps", "4", "--resume", "--quiet") == 0
    a, b = load_state(straight), load_state(resumed)
    assert a["step"] == 4
    assert_states_identical(a, b)
    assert not (straight / "model.safetensors").exists()  # paused, not finished


def test_export_only_on_a_paused_run(workspace, paused_run, tmp_path):
    run_dir = copy_run(paused_run, tmp_path)
    # The checkpoint's own config decides the model, whatever config is passed.
    config_args = [str(workspace / "tiny.toml"), "--set", "model.cond_channels=16"]
    code = main(["train", *config_args, "--run-dir", str(run_dir), "--export-only"])
    assert code == 0
    model = load_model(run_dir / "model.safetensors")
    provenance = model.provenance
    assert provenance["steps"] == 2 and provenance["partial"] is True
    assert provenance["train_config"]["train"]["total_steps"] == 6
    state = load_state(run_dir)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["ema"][name].contiguous()), name


def lincae_env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LINCAE_CACHE=str(workspace / "cache"),
        OMP_NUM_THREADS="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_cli_trains_to_the_end_and_exports_a_usable_model(workspace, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        str(BIN / "lincae"),
        "train",
        str(workspace / "tiny.toml"),
        "--data",
        str(workspace / "music"),
        "--run-dir",
        str(run_dir),
        "--set",
        "train.total_steps=3",
    ]
    result = subprocess.run(
        command, env=lincae_env(workspace), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "exported EMA weights" in result.stderr

    path = run_dir / "model.safetensors"
    metadata = read_model_metadata(path)
    provenance = metadata["provenance"]
    assert metadata["name"] == "tiny-test"
    assert provenance["steps"] == 3
    assert provenance["train_config"]["train"]["total_steps"] == 3
    assert provenance["train_config"]["model"]["preset"] == "tiny"
    assert "train" in provenance["command"] and "train.total_steps=3" in provenance["command"]
    assert provenance["data"]["train_files"] == 3

    model = load_model(path)
    state = load_state(run_dir)
    ema_differs = False
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["ema"][name].contiguous()), name
        ema_differs |= not torch.equal(value, state["model"][name].contiguous())
    assert ema_differs  # the export holds the EMA, not the raw weights

    audio = 0.3 * torch.sin(2 * math.pi * 330.0 * torch.arange(crop_samples(model, 16)) / RATE)
    with torch.no_grad():
        latents = model.encode(audio[None])
        decoded = model.decode(latents, seed=0)
    assert latents.shape == (1, model.config.latent_channels, 2)
    assert decoded.shape == (1, audio.shape[0]) and torch.isfinite(decoded).all()

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "valid"}


def test_torchrun_two_processes(workspace, paused_run, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [
        str(BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--no-python",
        "lincae",
        "train",
        str(workspace / "tiny.toml"),
        "--data",
        str(workspace / "music"),
        "--run-dir",
        str(run_dir),
        "--steps",
        "2",
        "--quiet",
    ]
    result = subprocess.run(
        command, env=lincae_env(workspace), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "bucket view strides" not in result.stderr
    ddp, single = load_state(run_dir), load_state(paused_run)
    assert ddp["step"] == 2 and ddp.keys() == single.keys()
    for key in ("model", "ema"):
        assert {k: v.shape for k, v in ddp[key].items()} == {
            k: v.shape for k, v in single[key].items()
        }
    assert ddp["config"] == single["config"]
    # Each rank drew half of the batch: a different update from the single process.
    assert any(not torch.equal(ddp["model"][k], single["model"][k]) for k in ddp["model"])


# -- errors as the user sees them ---------------------------------------------------------------


def test_empty_data_folder(workspace, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = train(workspace, tmp_path / "run", data=tmp_path / "empty")
    assert code == 1
    assert_one_line_error(capsys, "no audio files found")


def test_unreadable_and_short_files_are_skipped_with_a_count(workspace, tmp_path, capsys):
    data = tmp_path / "data" / "train"
    write_clip(data / "good.wav", 0.3, seed=1)
    write_clip(data / "short.wav", 0.05, seed=2)  # shorter than one 5632-sample crop
    (data / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave file")
    (data / "broken.flac").write_bytes(b"")
    # The second run reads the decoded data from the cache (with an empty validation store,
    # which mmap refuses) and still reports what was skipped.
    for args in (["--steps", "1"], ["--steps", "2", "--resume"]):
        code = train(workspace, tmp_path / "run", *args, data=data.parent)
        err = capsys.readouterr().err
        assert code == 0, err
        assert "lincae: warning: train: skipped 2 unreadable file(s)" in err
        assert "lincae: warning: train: skipped 1 file(s) shorter than one crop" in err
        assert "Traceback" not in err and "UserWarning" not in err
    assert load_state(tmp_path / "run")["step"] == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.wav": b"garbage", "b.ogg": b"OggS garbage"}, "no usable training audio"),
        ({"short.wav": None}, "no usable training audio"),
    ],
)
def test_no_usable_audio(workspace, tmp_path, capsys, files, message):
    data = tmp_path / "data"
    for name, content in files.items():
        if content is None:
            write_clip(data / "train" / name, 0.05, seed=3)
        else:
            (data / "train").mkdir(parents=True, exist_ok=True)
            (data / "train" / name).write_bytes(content)
    assert train(workspace, tmp_path / "run", data=data) == 1
    assert_one_line_error(capsys, message)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.bogus=1", "'train.bogus'"),
        ("augment.gain_maximum=2", "'augment.gain_maximum'"),
        ("model.channels=4", "channels"),
        ("optimizer.lr=1", "'optimizer'"),
        ("data.crop_frames=12", "'data.crop_frames' must be a multiple of 8"),
        ("train.checkpoint_every=0", "'train.checkpoint_every' must be at least 1"),
    ],
)
def test_bad_config_key_or_value(workspace, tmp_path, capsys, override, fragment):
    assert train(workspace, tmp_path / "run", "--set", override) == 1
    assert_one_line_error(capsys, fragment)
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_through_a_real_process(workspace, tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text(TINY_TOML.replace("lr = 1e-3", "learning_rate = 1e-3"))
    command = [str(BIN / "lincae"), "train", str(toml), "--data", ".", "--run-dir", "run"]
    result = subprocess.run(
        command, env=lincae_env(workspace), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert result.stderr.startswith("lincae: error: unknown config key 'train.learning_rate'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    workspace, paused_run, tmp_path, capsys, monkeypatch
):
    forward = ConsistencyLoss.forward
    calls = []

    def poisoned(self, *args):
        loss = forward(self, *args)
        calls.append(1)
        return loss * float("nan") if len(calls) == 4 else loss  # the 4th step: step index 3

    monkeypatch.setattr(trainer_module.ConsistencyLoss, "forward", poisoned)
    run_dir = tmp_path / "run"
    assert train(workspace, run_dir, "--steps", "6") == 1
    assert_one_line_error(capsys, "non-finite loss at step 3", "last good checkpoint (step 2)")
    # The checkpoint on disk is the one of step 2, identical to an undisturbed run's.
    assert_states_identical(load_state(run_dir), load_state(paused_run))


def test_resume_with_a_different_config(workspace, paused_run, tmp_path, capsys):
    run_dir = copy_run(paused_run, tmp_path)
    code = train(workspace, run_dir, "--resume", "--set", "train.lr=2e-3")
    assert code == 1
    assert_one_line_error(capsys, "different config", "train.lr")


def test_existing_run_dir_without_resume(workspace, paused_run, tmp_path, capsys):
    run_dir = copy_run(paused_run, tmp_path)
    assert train(workspace, run_dir) == 1
    assert_one_line_error(capsys, "already holds a training run", "--resume")
    assert load_state(run_dir)["step"] == 2


def test_warm_start_from_exported_weights(workspace, paused_run, tmp_path, capsys):
    """train.init_from loads the weights into model and EMA, then trains with fresh schedules;
    the export records where it started from."""
    source = copy_run(paused_run, tmp_path)
    assert (
        main(["train", str(workspace / "tiny.toml"), "--run-dir", str(source), "--export-only"])
        == 0
    )
    weights = source / "model.safetensors"
    initial = load_model(weights).state_dict()
    run_dir = tmp_path / "warm"
    init = f"train.init_from={weights}"
    assert train(workspace, run_dir, "--set", init, "--steps", "1", "--quiet") == 0
    state = load_state(run_dir)
    assert state["step"] == 1
    # One update away from the source weights, not from a random init.
    fresh = ConsistencyAutoencoder(load_model(weights).config).state_dict()
    name = "encoder.down_layers.0.conv1.weight"
    moved = (state["model"][name] - initial[name]).norm()
    assert moved < 0.5 * (fresh[name] - initial[name]).norm()
    assert train(workspace, run_dir, "--set", init, "--resume", "--quiet") == 0
    provenance = load_model(run_dir / "model.safetensors").provenance
    assert provenance["steps"] == 6
    assert provenance["initialised_from"]["sha256"] == load_model(weights).weights_sha256
    assert provenance["initialised_from"]["provenance"]["steps"] == 2
    assert provenance["commit"] == state["commit"]


def test_warm_start_needs_the_same_architecture(workspace, paused_run, tmp_path, capsys):
    source = copy_run(paused_run, tmp_path)
    assert (
        main(["train", str(workspace / "tiny.toml"), "--run-dir", str(source), "--export-only"])
        == 0
    )
    capsys.readouterr()
    run_dir = tmp_path / "warm"
    args = ["--set", f"train.init_from={source / 'model.safetensors'}"]
    assert train(workspace, run_dir, *args, "--set", "model.cond_channels=16") == 1
    assert_one_line_error(capsys, "init_from", "same architecture")
    assert (
        train(workspace, tmp_path / "w2", "--set", f"train.init_from={tmp_path}/none.safetensors")
        == 1
    )
    assert_one_line_error(capsys, "none.safetensors")
