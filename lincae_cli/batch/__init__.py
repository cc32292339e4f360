"""Files and folders in, files and folders out: the library's batch API (see files.py).

The names are imported on first use (PEP 562), so that importing one submodule, such as
``lincae_cli.batch.result`` for the CLI's rendering, does not import the audio and engine
layers behind ``files``.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "BatchResult": "result",
    "Record": "result",
    "DecodeTarget": "files",
    "Inference": "files",
    "decode_files": "files",
    "encode_files": "files",
    "save_result": "single",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
