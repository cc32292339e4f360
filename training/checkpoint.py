"""Run-directory checkpoints (exact resume) and export of EMA weights to our model format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lincae_cli.atomic import atomic_output
from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import save_model
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "model.safetensors"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (tensors, numbers, strings, nested dicts/lists) atomically."""
    path = run_dir / CHECKPOINT_NAME
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise LincaeError(f"{path}: unreadable checkpoint ({exc})") from None


def export_model(
    run_dir: Path,
    model: ConsistencyAutoencoder,
    ema_state: dict[str, torch.Tensor],
    name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write `RUN_DIR/model.safetensors` holding the EMA weights."""
    export = ConsistencyAutoencoder(model.config)
    export.load_state_dict(ema_state)
    path = save_model(export, run_dir / EXPORT_NAME, name, provenance)
    (run_dir / "export.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    return path
