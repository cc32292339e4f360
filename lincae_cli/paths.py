"""Path conventions every layer shares: ``-`` for stdin/stdout, ``.lat`` (or ``.npy`` beside a
``.json`` sidecar) for latents, and how such places are named in messages (``<stdin>``,
``<stdout>``, ``<null>``)."""

from __future__ import annotations

import os
from pathlib import Path

STDIO = "-"
LAT_SUFFIX = ".lat"
NPY_SUFFIX = ".npy"  # latents as a NumPy array, beside a JSON sidecar (latents/npy.py)
STDIN_NAME = "<stdin>"
STDOUT_NAME = "<stdout>"
NULL_NAME = "<null>"  # the output of -n (sox's null file): the work is done, nothing written


def is_stdio(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``-`` (stdin for an input, stdout for an output)."""
    return os.fspath(path) == STDIO


def is_lat_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a latent file (suffix ``.lat``)."""
    return Path(path).suffix.lower() == LAT_SUFFIX


def is_npy_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names latents as a NumPy array (suffix ``.npy``, beside its sidecar)."""
    return Path(path).suffix.lower() == NPY_SUFFIX


def is_latent_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names latents: a .lat file, or a .npy (and its sidecar)."""
    return is_lat_path(path) or is_npy_path(path)


def input_name(path: str | os.PathLike[str]) -> str:
    """How an input is named in messages: ``<stdin>`` for ``-``, else the path as given."""
    return STDIN_NAME if is_stdio(path) else os.fspath(path)


def output_name(path: str | os.PathLike[str]) -> str:
    """How an output is named in messages: ``<stdout>`` for ``-``, else the path as given."""
    return STDOUT_NAME if is_stdio(path) else os.fspath(path)
