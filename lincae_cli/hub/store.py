"""Our model file: one safetensors file holding the weights and, in its metadata, the JSON
model config, the model name, the format version and training provenance."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lincae_cli.atomic import atomic_output
from lincae_cli.errors import LincaeError
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import ModelConfig

MODEL_FORMAT = "lincae-model"
MODEL_FORMAT_VERSION = "1"


def save_model(
    model: ConsistencyAutoencoder,
    path: str | os.PathLike[str],
    name: str,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `model` atomically; returns the path."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": name,
        "config": model.config.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file, with `config` and `provenance` decoded from JSON."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except FileNotFoundError:
        raise LincaeError(f"{path}: model file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise LincaeError(f"{path}: not a readable safetensors model file ({exc})") from None
    if metadata.get("format") != MODEL_FORMAT:
        raise LincaeError(f"{path}: not a lincae model file (no '{MODEL_FORMAT}' metadata)")
    if metadata.get("format_version", "").split(".")[0] != MODEL_FORMAT_VERSION:
        raise LincaeError(
            f"{path}: model format version {metadata.get('format_version')} is not supported "
            f"by this lincae (reads version {MODEL_FORMAT_VERSION}); upgrade lincae"
        )
    try:
        metadata["config"] = json.loads(metadata["config"])
        metadata["provenance"] = json.loads(metadata.get("provenance") or "{}")
    except (KeyError, json.JSONDecodeError) as exc:
        raise LincaeError(f"{path}: corrupt model metadata ({exc})") from None
    return metadata


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> ConsistencyAutoencoder:
    """Read a model file written by `save_model`; the model is in eval mode."""
    metadata = read_model_metadata(path)
    config = ModelConfig.from_dict(metadata["config"])
    model = ConsistencyAutoencoder(config)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise LincaeError(f"{path}: corrupt model weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LincaeError(
            f"{path}: weights do not match the config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    model.name = metadata.get("name", Path(path).stem)  # type: ignore[assignment]
    model.weights_sha256 = file_sha256(path)  # type: ignore[assignment]
    model.provenance = metadata["provenance"]  # type: ignore[assignment]
    return model.to(device).eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model: ConsistencyAutoencoder) -> tuple[str, str]:
    """(name, weights sha256) of a model: the file's sha256 for a model loaded by `load_model`;
    a model built in memory is named ``unsaved-model`` and hashed over its weights."""
    name = getattr(model, "name", None) or "unsaved-model"
    digest = getattr(model, "weights_sha256", None)
    if digest is None:
        hasher = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            hasher.update(key.encode())
            hasher.update(value.detach().float().cpu().numpy().tobytes())
        digest = hasher.hexdigest()
    return str(name), str(digest)
