"""A run's metrics: `RUN_DIR/metrics.jsonl`, mirrored as TensorBoard scalars when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lincae_cli.errors import LincaeError

TENSORBOARD_DIR = "tensorboard"


def tensorboard_writer_class() -> type:
    """torch's SummaryWriter; a LincaeError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LincaeError(
            "train.tensorboard = true needs the tensorboard package: pip install tensorboard "
            "(or pip install 'lincae[tensorboard]')"
        ) from None
    return SummaryWriter


class MetricsLog:
    """Appends records `{"kind": "train" | "valid", "step": s, name: number, ...}` to
    metrics.jsonl and, with `tensorboard`, writes each number as the scalar `kind/name` at
    step s. Only the main rank keeps one."""

    def __init__(self, run_dir: Path, tensorboard: bool, start_step: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            writer_class = tensorboard_writer_class()
            # A run resumed at step s hides the events from s on that the interrupted run
            # wrote after its last checkpoint: the resumed run writes them again.
            self.writer = writer_class(
                log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=start_step or None
            )

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is None:
            return
        kind, step = record["kind"], record["step"]
        for name, value in record.items():
            if name in ("kind", "step") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
