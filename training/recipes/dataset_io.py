"""File helpers shared by the data recipes: split assignment, mono down-mix, atomic writes."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

DATA_ROOT = Path.home() / ".cache" / "lincae" / "data"
SAMPLE_RATE = 44100
TRAIN, VALID = "train", "valid"


def split_for_name(name: str, valid_fraction: float) -> str:
    """Return ``"valid"`` or ``"train"`` for a file name, stable across runs and machines.

    The name is hashed (not Python's salted ``hash``) so a track keeps its split whatever
    else is added to the set.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return VALID if position < valid_fraction else TRAIN


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels: ``[samples]`` or ``[samples, channels]`` -> float32 ``[samples]``."""
    if audio.ndim == 1:
        return audio.astype(np.float32, copy=False)
    return audio.mean(axis=1, dtype=np.float64).astype(np.float32)


def _temporary_sibling(path: Path) -> Path:
    # Same folder as the target, so os.replace stays on one file system and is atomic.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_audio_atomic(path: Path, audio: np.ndarray, sample_rate: int, subtype: str) -> None:
    """Write mono ``[samples]`` audio as FLAC so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    try:
        sf.write(temporary, audio, sample_rate, format="FLAC", subtype=subtype)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: Path, content: Any) -> None:
    """Write ``content`` as indented JSON through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path)
    try:
        temporary.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def recipe_parser(module_name: str, doc: str, default_output: Path) -> argparse.ArgumentParser:
    """Return the command-line parser a recipe starts from: its usage line names the module
    to run with ``python -m``, the first paragraph of its docstring describes it, and
    ``--output`` picks the folder to write."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module_name}", description=doc.split("\n\n")[0]
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=default_output,
        help=f"output folder (default: {default_output})",
    )
    return parser
