"""Where lincae keeps its own files (converted models, dataset caches).

The Hugging Face cache (raw downloads) belongs to huggingface_hub; this module only
covers lincae's cache: ``$LINCAE_CACHE``, else ``$XDG_CACHE_HOME/lincae``, else
``~/.cache/lincae``. Environment variables are read on every call, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from lincae_cli.atomic import atomic_output, atomic_write_bytes

__all__ = ["atomic_output", "atomic_write_bytes", "converted_models_dir", "lincae_cache_dir"]


def lincae_cache_dir() -> Path:
    """The root of lincae's cache (not created here)."""
    explicit = os.environ.get("LINCAE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    if xdg_cache:
        return Path(xdg_cache).expanduser() / "lincae"
    return Path.home() / ".cache" / "lincae"


def converted_models_dir() -> Path:
    """Where models converted from published checkpoints are stored."""
    return lincae_cache_dir() / "models"
