"""Model names and where their weights come from.

A model spec given by the user (``--model``) is one of:

- a registered name (``lincae-small``, ``lin-cae``, ``music2latent``, ... see `REGISTRY`);
- ``hf://owner/repo/path/to/file.safetensors[@revision]``: one of our safetensors files on
  the Hub (``hf://owner/repo@revision/path`` is accepted too, as in huggingface_hub's URIs);
- a path to a ``.safetensors`` file in our format, or to a directory holding ``model.safetensors``.

Registered names win over paths: to use a local directory called ``lin-cae``, pass ``./lin-cae``.

Pinning: the published checkpoints are pinned to ``revision="main"`` because their commit
hashes could not be looked up when the registry was written (no network). ``main`` can move
upstream; replace it with the 40-hex commit (and add ``sha256`` digests) once known. Converted
models are cached under the revision's name, so a moved ``main`` is only picked up after
deleting the converted file.

This module is pure: no I/O, no environment, no huggingface_hub import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from lincae_cli.errors import LincaeError

ModelKind = Literal["embedded", "lincae", "linear-cae", "music2latent", "file"]

MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
HUB_KINDS: frozenset[str] = frozenset({"lincae", "linear-cae", "music2latent"})
"""Kinds whose files are downloaded from the Hub."""
CONVERTED_KINDS: frozenset[str] = frozenset({"linear-cae", "music2latent"})
"""Kinds whose downloads are published checkpoints that must be converted to our format."""

DEFAULT_MODEL = "lincae-small"
HF_URI_PREFIX = "hf://"
MODEL_FILENAME = "model.safetensors"
"""The file looked for when a model spec is a directory."""

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_REPO_PART_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ModelSource:
    """Where one model's weights come from.

    ``filenames`` are paths inside the Hub repo (hub kinds) or inside the ``lincae_weights``
    package (embedded). ``sha256`` maps some of those filenames to their expected lowercase
    hex digest; files without one are not verified. ``local_path`` is set for kind ``file`` only.
    ``scale_factor`` is the latent scale of linear-cae checkpoints (latent = encoder output * it).
    """

    name: str
    kind: ModelKind
    repo_id: str | None = None
    filenames: tuple[str, ...] = ()
    revision: str | None = None
    sha256: dict[str, str] = field(default_factory=dict, hash=False)
    scale_factor: float | None = None
    description: str = ""
    licence: str = ""
    local_path: Path | None = None

    def __post_init__(self) -> None:
        # Registry entries are code: a malformed one is a bug, hence ValueError not LincaeError.
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {MODEL_KINDS}")
        if self.kind in HUB_KINDS and not (self.repo_id and self.filenames and self.revision):
            raise ValueError(f"model {self.name!r}: hub sources need repo_id, filenames, revision")
        if self.kind == "file" and self.local_path is None:
            raise ValueError(f"model {self.name!r}: file sources need local_path")
        unknown = set(self.sha256) - set(self.filenames)
        if unknown:
            raise ValueError(f"model {self.name!r}: sha256 given for unlisted files {unknown}")
        for filename, digest in self.sha256.items():
            if not _SHA256_PATTERN.fullmatch(digest):
                raise ValueError(f"model {self.name!r}: bad sha256 for {filename!r}: {digest!r}")
        basenames = [PurePosixPath(filename).name for filename in self.filenames]
        if len(set(basenames)) != len(basenames):
            # Downloaded files are handed to converters keyed by basename.
            raise ValueError(f"model {self.name!r}: filenames must have distinct basenames")


_LINEAR_CAE_REPO = "BernardoTorres/linear_consistency_autoencoders"
_LINEAR_CAE_FILES = (
    "autoencoder_inference_model_last.pth",
    "frontend_kwargs_last.yaml",
    "generator_kwargs_last.yaml",
    "diffusion_kwargs_last.yaml",
)
_LINEAR_CAE_LICENCE = (
    f"see the model card of {_LINEAR_CAE_REPO} on the Hub (the linear-cae code is Apache-2.0)"
)


def _linear_cae(name: str, weights_hash: str, scale_factor: float, description: str) -> ModelSource:
    return ModelSource(
        name=name,
        kind="linear-cae",
        repo_id=_LINEAR_CAE_REPO,
        filenames=tuple(f"{weights_hash}_weights/{filename}" for filename in _LINEAR_CAE_FILES),
        revision="main",  # no commit hash known yet: see the module docstring
        scale_factor=scale_factor,
        description=description,
        licence=_LINEAR_CAE_LICENCE,
    )


_SOURCES: tuple[ModelSource, ...] = (
    ModelSource(
        name="lincae-small",
        kind="embedded",
        filenames=("lincae-small.safetensors",),
        description="small Lin-CAE model shipped with lincae; fast on CPU (default)",
        licence="MIT",
    ),
    ModelSource(
        name="m2l-small",
        kind="embedded",
        filenames=("m2l-small.safetensors",),
        description="small music2latent-style model shipped with lincae (no linearity training)",
        licence="MIT",
    ),
    _linear_cae("m2l", "1511f18a", 15.0, "published music2latent baseline retrained by linear-cae"),
    _linear_cae("lin-cae", "0a3afbec", 33.0, "published Lin-CAE (linear consistency autoencoder)"),
    _linear_cae("lin-cae-2", "2f4c6d21", 40.0, "published Lin-CAE, second release"),
    ModelSource(
        name="music2latent",
        kind="music2latent",
        repo_id="SonyCSLParis/music2latent",
        filenames=("music2latent.pt",),
        revision="main",  # no commit hash known yet: see the module docstring
        description="original music2latent checkpoint (Pasini et al., 2024)",
        licence="CC BY-NC 4.0",
    ),
)

REGISTRY: dict[str, ModelSource] = {source.name: source for source in _SOURCES}
"""Known model names, in display order."""


def list_models() -> list[ModelSource]:
    """All registered models, in display order."""
    return list(REGISTRY.values())


def parse_model_spec(spec: str) -> ModelSource:
    """Turn a ``--model`` value into a `ModelSource` (no I/O beyond an existence check)."""
    spec = spec.strip()
    if not spec:
        raise LincaeError(_unknown_model_message("''"))
    if spec.startswith(HF_URI_PREFIX):
        return _parse_hf_uri(spec)
    if spec in REGISTRY:
        return REGISTRY[spec]
    if _looks_like_path(spec):
        return ModelSource(name=spec, kind="file", local_path=Path(spec).expanduser())
    raise LincaeError(_unknown_model_message(repr(spec)))


def _looks_like_path(spec: str) -> bool:
    return (
        "/" in spec
        or "\\" in spec
        or spec.startswith((".", "~"))
        or spec.endswith(".safetensors")
        or Path(spec).expanduser().exists()
    )


def _unknown_model_message(shown_spec: str) -> str:
    return (
        f"unknown model {shown_spec}; known models: {', '.join(REGISTRY)}; "
        f"or pass hf://owner/repo/path/file.safetensors[@revision], "
        f"a .safetensors file, or a directory containing {MODEL_FILENAME}"
    )


def _parse_hf_uri(spec: str) -> ModelSource:
    """Parse ``hf://owner/repo/path.safetensors[@rev]`` or ``hf://owner/repo@rev/path``."""
    form = f"expected {HF_URI_PREFIX}owner/repo/path/to/file.safetensors[@revision]"
    parts = spec[len(HF_URI_PREFIX) :].split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise LincaeError(f"bad model URI {spec!r}: {form}")
    owner, repo, path = parts
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    elif "@" in path:
        path, revision = path.rsplit("@", 1)
    if revision is not None and not revision:
        raise LincaeError(f"bad model URI {spec!r}: empty revision after '@'")
    for part in (owner, repo):
        if not _REPO_PART_PATTERN.fullmatch(part):
            raise LincaeError(f"bad model URI {spec!r}: {part!r} is not a valid repo name part")
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise LincaeError(f"bad model URI {spec!r}: bad file path {path!r}")
    if not path.endswith(".safetensors"):
        raise LincaeError(
            f"bad model URI {spec!r}: hf:// models must be .safetensors files in lincae's format"
        )
    return ModelSource(
        name=spec,
        kind="lincae",
        repo_id=f"{owner}/{repo}",
        filenames=(path,),
        revision=revision or "main",
        description="lincae model on the Hugging Face Hub",
    )
