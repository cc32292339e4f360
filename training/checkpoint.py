"""Run-directory checkpoints (exact resume), the config a run resumes with, and export of EMA
weights to our model format with the run's provenance.

A checkpoint holds, besides the tensors: `config` (the run's TrainConfig as JSON), `run` (JSON:
the command that started the run, the `--set` overrides given over its life, its data roots and
description, the precision, and one entry per resume) and `schedule` (the knots of a changed
`train.total_steps`, training/schedule.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lincae_training.config import TrainConfig

from lincae_cli.atomic import atomic_output, atomic_write_bytes
from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import save_model
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "model.safetensors"
EXPORT_PROVENANCE_NAME = "export.json"  # the provenance of the last export, readable as text


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (tensors, numbers, strings, nested dicts/lists) atomically."""
    path = run_dir / CHECKPOINT_NAME
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path, mmap: bool = False) -> dict[str, Any] | None:
    """The checkpoint in `run_dir` (None: there is none). `mmap` maps the tensors instead of
    reading them: cheap when only the recorded config and run are wanted."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for corrupt files
        raise LincaeError(f"{path}: unreadable checkpoint ({exc})") from None


def recorded_run(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's `run` record; empty for checkpoints written before it existed."""
    return json.loads(state.get("run") or "{}")


def stored_config(state: dict[str, Any], where: Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(json.loads(state["config"]))
    except LincaeError as exc:
        raise LincaeError(f"{where}: the recorded config does not load here: {exc}") from None


def resume_config(
    run_dir: Path, config: Path | None, overrides: list[str]
) -> tuple[TrainConfig, list[str]]:
    """The config to resume `run_dir` with, and every override of the run so far (to record).

    The run's recorded config with `overrides` (given now) on top; or, when `config` (a file)
    is given, that file with the overrides the run recorded and then `overrides`. Without a
    checkpoint in `run_dir`, a new run starts there, from `config`. Whether the result may
    resume the checkpoint (only RESUMABLE_KEYS may change) is the trainer's check.
    """
    state = load_checkpoint(run_dir, mmap=True)
    if state is None:
        if config is None:
            raise LincaeError(
                f"{run_dir}: no checkpoint to resume; pass a CONFIG to start a run there"
            )
        return TrainConfig.load(config, overrides), list(overrides)
    given_now = {item.split("=", 1)[0].strip() for item in overrides}
    recorded = recorded_run(state).get("overrides", [])
    every = [o for o in recorded if o.split("=", 1)[0].strip() not in given_now] + overrides
    if config is not None:
        return TrainConfig.load(config, every), every
    return stored_config(state, run_dir / CHECKPOINT_NAME).with_overrides(overrides), every


def stored_init_provenance(state: dict[str, Any]) -> dict[str, Any] | None:
    """Where a checkpoint's run was warm-started from (None: random init, or an older file)."""
    return json.loads(state.get("init_provenance") or "null")


def export_provenance(state: dict[str, Any]) -> dict[str, Any]:
    """What an export of the checkpoint `state` records about its training: the same for the
    export at the end of a run and for `--export-only`."""
    run = recorded_run(state)
    config = json.loads(state["config"])
    step = int(state["step"])
    provenance = {
        "trained_with": f"lincae {state.get('lincae_version', 'unknown')}",
        "commit": state.get("commit"),
        "command": run.get("command"),
        "steps": step,
        "initialised_from": stored_init_provenance(state),
        "wall_seconds": round(float(state.get("wall_seconds", 0.0)), 1),
        "precision": run.get("precision"),
        "data": run.get("data"),
        "train_config": config,
        "partial": step < config["train"]["total_steps"],
    }
    if run.get("resumed"):
        provenance["resumed"] = run["resumed"]
    if state.get("schedule"):
        provenance["schedule_knots"] = json.loads(state["schedule"])
    return provenance


def export_model(
    run_dir: Path,
    model: ConsistencyAutoencoder,
    ema_state: dict[str, torch.Tensor],
    name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write `RUN_DIR/model.safetensors` holding the EMA weights, and its provenance as
    `RUN_DIR/export.json`."""
    export = ConsistencyAutoencoder(model.config)
    export.load_state_dict(ema_state)
    path = save_model(export, run_dir / EXPORT_NAME, name, provenance)
    text = json.dumps(provenance, indent=2, sort_keys=True)
    atomic_write_bytes(run_dir / EXPORT_PROVENANCE_NAME, text.encode())
    return path


def earlier_export_provenance(run_dir: Path) -> dict[str, Any]:
    """The training facts (command, data, precision) of the run's last export at the end of
    training, for checkpoints older than their `run` record; empty when there is none."""
    try:
        earlier = json.loads((run_dir / EXPORT_PROVENANCE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict) or "data" not in earlier:  # not a training export
        return {}
    return {key: earlier.get(key) for key in ("command", "data", "precision")}
