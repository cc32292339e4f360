"""`lincae train` end to end on a tiny model and tiny synthetic data: overfitting, exact resume,
torchrun, export, MUSDB18 data, TensorBoard, the fp16 loss scale, and the errors a user sees."""

from __future__ import annotations

import io
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
from lincae_training.data import (
    AudioStore,
    CropSampler,
    hashed_split,
    load_datasets,
    validation_clips,
)
from lincae_training.trainer import (
    ConsistencyLoss,
    StepInputs,
    crop_samples,
    draw_step_inputs,
    learning_rate,
)
from rich.console import Console

from lincae_cli.cli.app import main
from lincae_cli.engine import device as device_module
from lincae_cli.engine.progress import StepsProgress
from lincae_cli.eval.codec import model_codec
from lincae_cli.eval.datasets import clip_layout
from lincae_cli.eval.linearity import evaluate
from lincae_cli.hub.store import load_model, read_model_metadata
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import preset

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


def train_args(
    workspace: Path, run_dir: Path, *args: str, data: Path | str | None = None
) -> list[str]:
    """`train tiny.toml --data DATA --run-dir RUN ...`: the arguments after `lincae`."""
    data_args = ["--data", str(data or workspace / "music")]
    return ["train", str(workspace / "tiny.toml"), *data_args, "--run-dir", str(run_dir), *args]


def train(workspace: Path, run_dir: Path, *args: str, data: Path | str | None = None) -> int:
    """`lincae train tiny.toml --data DATA --run-dir RUN ...` in this process; exit code."""
    return main(train_args(workspace, run_dir, *args, data=data))


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

    inputs = StepInputs(audio, None, None, sigma, sigma_next, batch.noise)

    def batch_loss() -> torch.Tensor:
        return loss_module(inputs).mean()

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
    command = [str(BIN / "lincae"), *train_args(workspace, run_dir, "--set", "train.total_steps=3")]
    result = subprocess.run(
        command, env=lincae_env(workspace), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "exported EMA weights" in result.stderr

    path = run_dir / "model.safetensors"
    metadata = read_model_metadata(path)
    provenance = metadata["provenance"]
    assert metadata["name"] == "tiny-test-run"  # the run's name (run folder), not the preset's
    assert provenance["steps"] == 3
    assert provenance["train_config"]["train"]["total_steps"] == 3
    assert provenance["train_config"]["model"]["preset"] == "tiny"
    assert "train" in provenance["command"] and "train.total_steps=3" in provenance["command"]
    assert provenance["data"]["train_files"] == 3
    assert provenance["precision"] == "fp32"  # the tiny test config asks for it

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
        *train_args(workspace, run_dir, "--steps", "2", "--quiet"),
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


def test_resume_a_checkpoint_older_than_a_config_key(workspace, paused_run, tmp_path):
    """A checkpoint saved before a config key existed resumes when the key has its default,
    and not when the config sets it otherwise."""
    run_dir = copy_run(paused_run, tmp_path)
    state = load_state(run_dir)
    stored = json.loads(state["config"])
    del stored["data"]["valid_seed"]
    state["config"] = json.dumps(stored)
    torch.save(state, run_dir / "checkpoint.pt")
    assert train(workspace, run_dir, "--resume", "--set", "data.valid_seed=4") == 1
    assert train(workspace, run_dir, "--resume", "--steps", "3", "--quiet") == 0
    assert load_state(run_dir)["step"] == 3


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


# -- MUSDB18 through the musdb package --------------------------------------------------------

MUSDB_STEMS = ("drums", "bass", "other", "vocals")
MUSDB_PARTS = ("mixture", *MUSDB_STEMS)  # the order of a track's clips in the store
MUSDB_VALID_TRACK = "Actions - One Minute Smile"  # in musdb's own list of validation tracks


def require_musdb() -> None:
    try:
        import musdb  # noqa: F401
    except ImportError:
        pytest.skip("musdb is not installed")
    except RuntimeError:  # its stempeg dependency needs ffmpeg and ffprobe
        pytest.skip("musdb needs ffmpeg and ffprobe")


def musdb_stems(seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Four stereo stems `[samples, 2]`, a different tone each, and their sum as the mixture."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    stems = {}
    for k, name in enumerate(MUSDB_STEMS):
        tone = 0.2 * np.sin(2 * np.pi * (110.0 * (k + 1) + 20.0 * seed) * time)
        noise = 0.01 * rng.standard_normal((time.size, 2))
        stems[name] = np.stack([tone, 0.5 * tone], axis=1) + noise
    return {"mixture": sum(stems.values()), **stems}


def write_musdb_hq(root: Path, tracks: dict[str, list[str]], seconds: float = 2.0) -> None:
    """A MUSDB18-HQ layout: `<subset>/<Track Name>/{mixture,drums,bass,other,vocals}.wav`."""
    seed = 0
    for subset, names in tracks.items():
        for name in names:
            folder = root / subset / name
            folder.mkdir(parents=True, exist_ok=True)
            for part, audio in musdb_stems(seconds, seed).items():
                sf.write(folder / f"{part}.wav", audio.astype(np.float32), RATE)
            seed += 1


def musdb_load(root: Path, cache: Path, valid_fraction: float = 0.05):
    return load_datasets([f"musdb:{root}"], RATE, 5632, 0.001, valid_fraction, 0, cache)


def test_musdb_hq_follows_musdb_train_valid_split(tmp_path):
    """MUSDB's train subset, split by musdb's own validation list; the test subset unused;
    mixture and stems of a track are separate clips, decoded from the right files."""
    require_musdb()
    root = tmp_path / "musdb18hq"
    train_tracks = ["Alpha Band - First Song", MUSDB_VALID_TRACK, "Beta Band - Second Song"]
    write_musdb_hq(root, {"train": train_tracks, "test": ["Gamma Band - Test Song"]})
    data = musdb_load(root, tmp_path / "cache")

    def expected(names: list[str]) -> list[str]:
        return [str(root / "train" / n / f"{part}.wav") for n in names for part in MUSDB_PARTS]

    assert data.train.store.names == expected(["Alpha Band - First Song", train_tracks[2]])
    assert data.valid.names == expected([MUSDB_VALID_TRACK])
    assert data.description["roots"] == [f"musdb:{root}"]
    # Clip 6 is the second training track's drums, mono, at full length.
    drums, _ = sf.read(root / "train" / train_tracks[2] / "drums.wav", dtype="float32")
    clip = data.train.store.clip(6).astype(np.float32) / 32767.0
    assert np.abs(clip - drums.mean(axis=1)).max() < 2e-4
    # The second load reads the cache: same clips, no new cache folder.
    folders = sorted((tmp_path / "cache").iterdir())
    again = musdb_load(root, tmp_path / "cache")
    assert sorted((tmp_path / "cache").iterdir()) == folders
    assert np.array_equal(again.train.store.audio, data.train.store.audio)


def test_musdb_unknown_tracks_are_split_by_name_and_missing_stems_counted(tmp_path):
    """A copy without any of musdb's validation tracks: a hash of the track name decides
    (all parts of a track together), with a warning; a missing stem is counted as unreadable."""
    require_musdb()
    names = [f"Artist {i} - Song {i}" for i in range(8)]
    splits = {name: hashed_split(name, 0.5) for name in names}
    assert set(splits.values()) == {"train", "valid"}  # the test needs both
    root = tmp_path / "musdb18hq"
    write_musdb_hq(root, {"train": names}, seconds=0.5)
    missing = root / "train" / names[0] / "vocals.wav"
    missing.unlink()
    with pytest.warns(UserWarning) as caught:
        data = musdb_load(root, tmp_path / "cache", valid_fraction=0.5)
    messages = [str(w.message) for w in caught]
    assert any("none of musdb's validation tracks" in m for m in messages), messages
    assert any("skipped 1 unreadable file(s)" in m and str(missing) in m for m in messages)
    by_split = {"train": data.train.store.names, "valid": data.valid.names}
    for split, clip_names in by_split.items():
        tracks = {Path(n).parent.name for n in clip_names}
        assert tracks == {n for n in names if splits[n] == split}
        expected_clips = 5 * len(tracks) - (names[0] in tracks)
        assert len(clip_names) == expected_clips


def test_musdb_stem_mp4_streams_are_decoded_one_by_one(tmp_path):
    """MUSDB18's `.stem.mp4` (AAC, five streams): one clip per stream, through musdb."""
    require_musdb()
    import stempeg

    root = tmp_path / "musdb18"
    (root / "train").mkdir(parents=True)
    parts = musdb_stems(1.0, seed=0)
    path = root / "train" / "Alpha Band - First Song.stem.mp4"
    # Stream order of a stem file: mixture, drums, bass, other, vocals.
    streams = np.stack([parts[name] for name in MUSDB_PARTS])
    stempeg.write_stems(str(path), streams, sample_rate=RATE, writer=stempeg.StreamsWriter())
    with pytest.warns(UserWarning, match="none of musdb's validation tracks"):
        data = musdb_load(root, tmp_path / "cache", valid_fraction=0.0)
    assert data.train.store.names == [f"{path}#{part}" for part in MUSDB_PARTS]
    for index, part in enumerate(MUSDB_PARTS):
        decoded = data.train.store.clip(index).astype(np.float32) / 32767.0
        reference = parts[part].mean(axis=1)
        # AAC adds a little delay and loss: find the lag, then compare.
        lag = int(np.argmax(np.correlate(decoded[:8192], reference[:4096], mode="valid")))
        aligned = decoded[lag : lag + reference.size - 4096]
        error = aligned - reference[: aligned.size]
        assert np.sqrt(np.mean(error**2)) < 0.1 * np.sqrt(np.mean(reference**2)), part


def test_cli_trains_on_musdb_hq(workspace, tmp_path, capsys):
    require_musdb()
    root = tmp_path / "musdb18hq"
    write_musdb_hq(root, {"train": ["Alpha Band - First Song", MUSDB_VALID_TRACK]}, seconds=1.0)
    run_dir = tmp_path / "run"
    assert train(workspace, run_dir, "--steps", "1", "--quiet", data=f"musdb:{root}") == 0
    assert load_state(run_dir)["step"] == 1
    assert train(workspace, tmp_path / "r2", data=f"musdb:{tmp_path / 'nowhere'}") == 1
    assert_one_line_error(capsys, "nowhere", "not a MUSDB18 folder")


def test_musdb_missing_package_or_ffmpeg(workspace, tmp_path, capsys, monkeypatch):
    data = f"musdb:{tmp_path}"
    monkeypatch.setitem(sys.modules, "musdb", None)  # `import musdb` raises ImportError
    assert train(workspace, tmp_path / "run", data=data) == 1
    assert_one_line_error(capsys, "pip install musdb")
    # musdb installed but no ffmpeg: its stempeg dependency raises RuntimeError on import.
    fake = tmp_path / "site" / "musdb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('ffmpeg or ffprobe could not be found')")
    monkeypatch.delitem(sys.modules, "musdb")
    monkeypatch.syspath_prepend(str(fake.parent))
    assert train(workspace, tmp_path / "run", data=data) == 1
    assert_one_line_error(capsys, "needs ffmpeg and ffprobe")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- TensorBoard ------------------------------------------------------------------------------


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_scalars_from_a_resumed_run(workspace, paused_run, tmp_path):
    """train.tensorboard may be switched on when resuming; the scalars match metrics.jsonl."""
    pytest.importorskip("tensorboard")
    run_dir = copy_run(paused_run, tmp_path)
    args = ["--resume", "--quiet", "--set", "train.tensorboard=true"]
    assert train(workspace, run_dir, *args, "--set", "train.validate_every=5") == 0
    scalars = tensorboard_scalars(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_names = ("loss", "lr", "consistency_step", "gain_low", "gain_high", "seconds_per_step")
    for name in train_names:
        logged = [(r["step"], r[name]) for r in records if r["kind"] == "train" and r["step"] > 2]
        assert [step for step, _ in logged] == [3, 4, 5, 6]
        assert scalars[f"train/{name}"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in logged]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [5, 6]  # validate_every, then at the end
    for name in ("recon_mss", "recon_snr_db", "homogeneity_ratio_0.5", "additivity_ratio"):
        expected = [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in valid]
        assert scalars[f"valid/{name}"] == expected
    assert (run_dir / "model.safetensors").exists()


def test_validation_metrics_are_those_of_lincae_eval():
    """The validation record is computed by lincae eval's functions, on its segment layout."""
    torch.manual_seed(0)
    model = ConsistencyAutoencoder(preset("tiny")).eval()
    layout = clip_layout(0.1, model.config)
    time = torch.arange(layout.samples) / RATE
    clips = torch.stack([0.3 * torch.sin(2 * math.pi * f * time) for f in (220.0, 550.0)])
    record, decoded = trainer_module.validation_metrics(model, clips, layout.margin)
    assert decoded.shape == clips.shape
    encode, decode = model_codec(model, seed=0)
    metrics, _ = evaluate(encode, decode, clips, sample_rate=RATE, margin=layout.margin)
    # Two clips make one pair, whichever way round eval draws it.
    expected = {
        "recon_mss": metrics["recon_mss"],
        "recon_snr_db": metrics["recon_snr_db"],
        "homogeneity_ratio_0.5": metrics["homogeneity_ratio_a0.5"],
        "additivity_ratio": metrics["additivity_ratio_pairs"],
    }
    assert record == pytest.approx(expected, rel=1e-6)


def test_progress_bar_shows_steps_and_info():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with StepsProgress("train", total=6, completed=2, console=console) as bar:
        bar.update(3, "loss 0.1234 2.00 steps/s")
    shown = buffer.getvalue()
    assert "train" in shown and "3/6" in shown and "loss 0.1234 2.00 steps/s" in shown


def test_tensorboard_missing_fails_at_start(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run_dir = tmp_path / "run"
    assert train(workspace, run_dir, "--set", "train.tensorboard=true") == 1
    assert_one_line_error(capsys, "train.tensorboard", "pip install tensorboard")
    assert not run_dir.exists()  # before any data is read or any step is taken


# -- fp16 with a loss scale ---------------------------------------------------------------------


def test_fp16_needs_cuda(workspace, tmp_path, capsys):
    assert train(workspace, tmp_path / "run", "--set", "train.precision=fp16") == 1
    assert_one_line_error(capsys, "fp16 training needs a CUDA GPU")


@pytest.mark.parametrize(
    ("asked", "native", "used", "said"),
    [
        ("auto", True, "bf16", "precision: bf16 (auto: native bf16 here)"),
        ("auto", False, "fp32", "precision: fp32 (auto: no native bf16 here)"),
        ("bf16", False, "bf16", "warning: bf16 is emulated"),
        ("bf16", True, "bf16", None),
        ("fp32", False, "fp32", None),
    ],
)
def test_precision_auto_follows_native_bf16(monkeypatch, asked, native, used, said):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: native)
    lines: list[str] = []
    assert trainer_module.training_precision(asked, torch.device("cpu"), lines.append) == used
    assert [line[: len(said)] for line in lines] == ([said] if said else [])


def test_validation_clips_do_not_follow_the_training_seed(workspace, tmp_path, monkeypatch):
    seeds = []

    def spy(store, count, samples, seed):
        seeds.append(seed)
        return validation_clips(store, count, samples, seed)

    monkeypatch.setattr(trainer_module, "validation_clips", spy)
    one_validated_step = ["--steps", "1", "--quiet", "--set", "train.validate_every=1"]
    for name, setting in [
        ("seed0", "train.seed=0"),
        ("seed5", "train.seed=5"),
        ("v3", "data.valid_seed=3"),
    ]:
        assert train(workspace, tmp_path / name, *one_validated_step, "--set", setting) == 0
    assert seeds == [0, 0, 3]


def test_quiet_still_warns_of_emulated_bf16(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    args = ["--steps", "1", "--quiet", "--set", "train.precision=bf16"]
    assert train(workspace, tmp_path / "run", *args) == 0
    err = capsys.readouterr().err
    assert "warning: bf16 is emulated" in err
    assert "stopped at step" not in err  # the rest stays quiet


def test_unknown_precision_is_one_error(workspace, tmp_path, capsys):
    assert train(workspace, tmp_path / "run", "--set", "train.precision=fp8") == 1
    assert_one_line_error(capsys, "train.precision must be auto, fp32, bf16 or fp16")


class InfiniteGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (an fp16 overflow)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """fp16 runs on CPU (as on CUDA), and step index 1 overflows in the backward pass: a
    finite loss whose gradients are infinite."""
    monkeypatch.setattr(trainer_module, "_FP16_DEVICE_TYPES", ("cuda", "cpu"))
    current = {"step": -1}
    train_step = trainer_module.Trainer.train_step
    forward = ConsistencyLoss.forward

    def tracked_step(self):
        current["step"] = self.step
        return train_step(self)

    def overflowing(self, *args):
        loss = forward(self, *args)
        return InfiniteGradient.apply(loss) if current["step"] == 1 else loss

    monkeypatch.setattr(trainer_module.Trainer, "train_step", tracked_step)
    monkeypatch.setattr(trainer_module.ConsistencyLoss, "forward", overflowing)


def test_fp16_loss_scale_skips_overflows_and_resumes_exactly(workspace, tmp_path, fp16_on_cpu):
    fp16 = ["--quiet", "--set", "train.precision=fp16"]
    straight = tmp_path / "straight"
    assert train(workspace, straight, "--steps", "4", *fp16) == 0
    paused = tmp_path / "paused"
    assert train(workspace, paused, "--steps", "1", *fp16) == 0
    first = load_state(paused)
    assert first["grad_scaler"]["scale"] == 65536.0 and first["skipped_steps"] == 0
    # Step index 1 overflows: skipped, the scale halved, the run goes on.
    assert train(workspace, paused, "--steps", "2", "--resume", *fp16) == 0
    second = load_state(paused)
    assert second["step"] == 2 and second["skipped_steps"] == 1
    assert second["grad_scaler"]["scale"] == 32768.0
    for name, value in first["model"].items():
        assert torch.equal(value, second["model"][name]), name  # the update was skipped
    assert train(workspace, paused, "--steps", "4", "--resume", *fp16) == 0
    a, b = load_state(straight), load_state(paused)
    assert_states_identical(a, b)
    assert a["grad_scaler"] == b["grad_scaler"] and a["skipped_steps"] == b["skipped_steps"] == 1
    assert a["grad_scaler"]["_growth_tracker"] == 2  # two good steps since the overflow
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    scales = [(r["step"], r["grad_scale"], r["skipped_steps"]) for r in records]
    assert scales == [(1, 65536.0, 0), (2, 65536.0, 1), (3, 32768.0, 1), (4, 32768.0, 1)]
    assert all(math.isfinite(r["loss"]) for r in records)


def test_fp16_resumes_a_checkpoint_without_scaler_state(workspace, tmp_path, fp16_on_cpu):
    """Checkpoints written before the loss scale was saved resume with a fresh scale."""
    fp16 = ["--quiet", "--set", "train.precision=fp16"]
    run_dir = tmp_path / "run"
    assert train(workspace, run_dir, "--steps", "2", *fp16) == 0
    state = load_state(run_dir)
    del state["grad_scaler"], state["skipped_steps"]
    torch.save(state, run_dir / "checkpoint.pt")
    assert train(workspace, run_dir, "--steps", "3", "--resume", *fp16) == 0
    resumed = load_state(run_dir)
    assert resumed["step"] == 3 and resumed["skipped_steps"] == 0
    assert resumed["grad_scaler"]["scale"] == 65536.0
    assert resumed["grad_scaler"]["_growth_tracker"] == 1
