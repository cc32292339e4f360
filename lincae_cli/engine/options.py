"""The inference settings as the CLI and the library take them, checked without torch.

Latent-only commands (gain, mix, trim, info...) build these settings but never run a model,
so nothing here may import torch; `engine/device.py` turns them into devices and dtypes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lincae_cli.engine.chunks import DEFAULT_CROSSFADE_FRAMES, DEFAULT_MARGIN_FRAMES
from lincae_cli.errors import LincaeError

DEVICES = ("auto", "cpu", "cuda", "mps")
# Names of the precisions the network runs at (nn.autoencoder.PRECISION_DTYPES maps them to
# dtypes; tests/test_engine_runner.py checks that the two agree).
PRECISION_NAMES = ("fp32", "bf16", "fp16")
PRECISIONS = ("auto", *PRECISION_NAMES)


def check_device_name(name: str) -> None:
    """Reject a ``--device`` value that names no kind of device."""
    if name not in DEVICES and not name.startswith(("cuda:", "mps:")):
        raise LincaeError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def check_precision(name: str) -> None:
    """Reject a ``--precision`` value that is not one of `PRECISIONS`."""
    if name not in PRECISIONS:
        raise LincaeError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class EngineOptions:
    """Settings of an `Engine` (the CLI's inference options)."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None  # None: `default_batch_size` for the device
    chunk_seconds: float | None = None  # None: `default_chunk_seconds` for the device
    margin_frames: int = DEFAULT_MARGIN_FRAMES
    crossfade_frames: int = DEFAULT_CROSSFADE_FRAMES
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise LincaeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.chunk_seconds is not None and not (
            self.chunk_seconds > 0 and math.isfinite(self.chunk_seconds)
        ):
            raise LincaeError(f"--chunk-seconds must be positive, got {self.chunk_seconds}")
        check_precision(self.precision)
        check_device_name(self.device)
