"""Shared fixtures: tiny random models saved by the tests, synthetic audio files, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lincae_cli.hub.store import save_model
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import preset

# Settings that keep CLI runs cheap: fp32 (no bf16 emulation on small convolutions) and short
# chunks, so a test file is one or a few forward passes of the tiny model.
FAST = ["--precision", "fp32", "--chunk-seconds", "0.5"]


def make_tiny_model(seed: int) -> ConsistencyAutoencoder:
    """The "tiny" preset with random weights. Layers initialised to zero (residual branches,
    the output convolution) get small random values too, so decoded audio depends on the
    latents instead of being scaled noise."""
    torch.manual_seed(seed)
    model = ConsistencyAutoencoder(preset("tiny"))
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.abs().max() > 0:
                parameter.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensors: more threads only add overhead, and on a
    busy machine the second mostly spins waiting for a core. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(make_tiny_model(0), path, name="tiny-test")
    return path


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "other.safetensors"
    save_model(make_tiny_model(1), path, name="tiny-other")
    return path


def tone(
    seconds: float,
    sample_rate: int = 44100,
    channels: int = 1,
    frequency_hz: float = 440.0,
    amplitude: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Float32 ``[channels, samples]``: a sine (a different frequency per channel) plus a
    little seeded noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rows = [
        amplitude * np.sin(2 * np.pi * frequency_hz * (1 + 0.25 * c) * t)
        + 0.01 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def write_tone(
    path: Path,
    seconds: float = 0.4,
    sample_rate: int = 44100,
    channels: int = 1,
    subtype: str | None = None,
    seed: int = 0,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = tone(seconds, sample_rate, channels, seed=seed)
    soundfile.write(path, audio.T, sample_rate, subtype=subtype)
    return path


@pytest.fixture
def cli(tiny_model_path: Path) -> Callable[..., object]:
    """Run ``lincae ARGS`` in-process through Typer's runner; ``model=True`` appends the tiny
    model and the fast settings. Returns click's Result (stdout_bytes, stderr, exit_code)."""
    from typer.testing import CliRunner

    from lincae_cli.cli.app import app

    runner = CliRunner()

    def run(*args: str, input: bytes | None = None, model: bool = False) -> object:
        extra = ["--model", str(tiny_model_path), *FAST] if model else []
        return runner.invoke(app, [*args, *extra], input=input)

    return run


def lincae_process(
    args: Sequence[str], cwd: Path | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start the real command line in a subprocess (stdin/stdout pipes as given)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "lincae_cli.cli.app", *args], cwd=cwd, env=env, **kwargs
    )


def run_lincae(
    args: Sequence[str], cwd: Path | None = None, input: bytes | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lincae_cli.cli.app", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        timeout=timeout,
    )
