"""Our model file: one safetensors file holding the weights and, in its metadata, the JSON
model config, the model name, the format version, training provenance and (format 1.1) the
model's silence latent ``b`` with the default of the affine latent operations.

Metadata keys (all strings, as safetensors requires): ``format`` (``"lincae-model"``),
``format_version`` (``"MAJOR.MINOR"``; a reader accepts its own major version), ``name``,
``config`` (JSON, `ModelConfig`), ``provenance`` (JSON object), ``silence_latent`` (1.1, JSON
list of ``latent_channels`` numbers: ``b = Enc(silence)``, see docs/latent-algebra.md) and
``affine_default`` (1.1, ``"true"`` or ``"false"``: whether mix, subtract, gain and the edits
correct for ``b`` unless told otherwise). A file without the 1.1 keys (the shipped v1 models)
gets ``b`` computed on first use (hub/silence.py) and its default from the registry
(`registered_affine_default`), else false. ``restore_loudness`` (1.1, ``"true"`` or
``"false"``: whether decoding brings the output to the loudness a `.lat` records unless told
otherwise, docs/metrics.md) is read the same way (`registered_restore_loudness`, else false).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lincae_cli.atomic import atomic_output
from lincae_cli.errors import LincaeError
from lincae_cli.hub.converted import current_conversion_config
from lincae_cli.hub.registry import registered_affine_default, registered_restore_loudness
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import ModelConfig

MODEL_FORMAT = "lincae-model"
MODEL_FORMAT_VERSION = "1.1"
_READ_MAJOR = MODEL_FORMAT_VERSION.split(".")[0]


def save_model(
    model: ConsistencyAutoencoder,
    path: str | os.PathLike[str],
    name: str,
    provenance: dict[str, Any] | None = None,
    affine_default: bool | None = None,
    restore_loudness: bool | None = None,
) -> Path:
    """Write `model` atomically; returns the path.

    The file records ``b = Enc(silence)`` computed now from the weights written (a value the
    model holds may belong to weights since changed, e.g. by training) and ``affine_default``
    (None: the model's own `affine_default`), and ``restore_loudness`` (None: the model's
    own).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if affine_default is None:
        affine_default = bool(model.affine_default)
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": name,
        "config": model.config.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
        "silence_latent": json.dumps(_fresh_silence_latent(model)),
        "affine_default": json.dumps(affine_default),
        "restore_loudness": json.dumps(
            bool(model.restore_loudness if restore_loudness is None else restore_loudness)
        ),
    }
    with atomic_output(path) as tmp:
        tmp.touch()  # created as any new file is here (umask): the mode the model file keeps
        mode = tmp.stat().st_mode & 0o777
        save_file(state, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)  # safetensors writes its files 0600
    return Path(path)


def _fresh_silence_latent(model: ConsistencyAutoencoder) -> list[float]:
    """``b`` of the model's current weights, computed in eval mode (kept on the model too)."""
    training = model.training
    model.silence_latent_values = None
    try:
        return model.eval().silence_latent().tolist()
    finally:
        model.train(training)


def read_model_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file, with `config` and `provenance` decoded from JSON, and
    `silence_latent` (list or None) and `affine_default` (bool or None) when recorded."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except FileNotFoundError:
        raise LincaeError(f"{path}: model file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise LincaeError(f"{path}: not a readable safetensors model file ({exc})") from None
    if metadata.get("format") != MODEL_FORMAT:
        raise LincaeError(f"{path}: not a lincae model file (no '{MODEL_FORMAT}' metadata)")
    if metadata.get("format_version", "").split(".")[0] != _READ_MAJOR:
        raise LincaeError(
            f"{path}: model format version {metadata.get('format_version')} is not supported "
            f"by this lincae (reads version {_READ_MAJOR}.x); upgrade lincae"
        )
    try:
        metadata["config"] = json.loads(metadata["config"])
        metadata["provenance"] = json.loads(metadata.get("provenance") or "{}")
        silence = json.loads(metadata.get("silence_latent") or "null")
        affine = json.loads(metadata.get("affine_default") or "null")
        restore = json.loads(metadata.get("restore_loudness") or "null")
    except (KeyError, json.JSONDecodeError) as exc:
        raise LincaeError(f"{path}: corrupt model metadata ({exc})") from None
    if silence is not None and not (
        isinstance(silence, list)
        and all(isinstance(v, float | int) and not isinstance(v, bool) for v in silence)
        and all(math.isfinite(v) for v in silence)
    ):
        raise LincaeError(f"{path}: corrupt model metadata (silence_latent must list numbers)")
    if affine is not None and not isinstance(affine, bool):
        raise LincaeError(f"{path}: corrupt model metadata (affine_default must be true/false)")
    metadata["silence_latent"] = None if silence is None else [float(v) for v in silence]
    metadata["affine_default"] = affine
    if restore is not None and not isinstance(restore, bool):
        raise LincaeError(f"{path}: corrupt model metadata (restore_loudness must be true/false)")
    metadata["restore_loudness"] = restore
    return metadata


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> ConsistencyAutoencoder:
    """Read a model file written by `save_model`; the model is in eval mode."""
    metadata = read_model_metadata(path)
    config = ModelConfig.from_dict(
        current_conversion_config(metadata["config"], metadata["provenance"])
    )
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
    silence = metadata["silence_latent"]
    if silence is not None and len(silence) != config.latent_channels:
        raise LincaeError(
            f"{path}: corrupt model metadata (silence_latent has {len(silence)} values for "
            f"{config.latent_channels} latent channels)"
        )
    name = metadata.get("name", Path(path).stem)
    sha256 = file_sha256(path)
    model.name = name  # type: ignore[assignment]
    model.weights_sha256 = sha256  # type: ignore[assignment]
    model.provenance = metadata["provenance"]  # type: ignore[assignment]
    model.silence_latent_values = silence
    affine = metadata["affine_default"]
    if affine is None:  # a file from before format 1.1: the registry may know its default
        affine = registered_affine_default(name, sha256)
    model.affine_default = bool(affine)
    restore = metadata["restore_loudness"]
    if restore is None:  # not recorded (the shipped v1 files): the registry may know it
        restore = registered_restore_loudness(name, sha256)
    model.restore_loudness = bool(restore)
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
