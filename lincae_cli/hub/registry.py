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

The default model is ``$LINCAE_MODEL`` when it is set, else `DEFAULT_MODEL` (`default_model`
reads the variable at each call). Otherwise this module is pure: no I/O, no environment, no
huggingface_hub import.
"""

from __future__ import annotations

import os
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
"""The default model when ``$LINCAE_MODEL`` is not set: embedded, so lincae works offline."""
MODEL_ENVIRONMENT_VARIABLE = "LINCAE_MODEL"
BUILT_IN = "built-in"
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
    hex digest; downloads with one are verified (the embedded files' digests name the shipped
    bytes, for ``affine_default``). ``local_path`` is set for kind ``file`` only.
    ``scale_factor`` is the latent scale of linear-cae checkpoints (latent = encoder output * it).
    ``affine_default`` is the measured default of the affine latent operations
    (docs/latent-algebra.md) for the files whose digests ``sha256`` lists, applied by
    `load_model` to a file that does not record its own (the shipped v1 files, whose bytes are
    their identity and are never rewritten); None: not measured (false). ``restore_loudness``
    likewise: whether decoding brings the output to the loudness a `.lat` records, as
    measured by `lincae eval` (docs/metrics.md, Level).
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
    affine_default: bool | None = None
    restore_loudness: bool | None = None

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
        if self.affine_default is not None and not self.sha256:
            raise ValueError(
                f"model {self.name!r}: affine_default needs the sha256 it was measured on"
            )
        if self.restore_loudness is not None and not self.sha256:
            raise ValueError(
                f"model {self.name!r}: restore_loudness needs the sha256 it was measured on"
            )
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
        sha256={
            "lincae-small.safetensors": (
                "4633790dc69bdd769f14b46f5f837aa4f72e5a93780f651d1e1d49c1bea7b2ba"
            )
        },
        description="small Lin-CAE model shipped with lincae; fast on CPU (default)",
        licence="MIT",
        # Measured (docs/latent-algebra.md): the correction raises its separation ratio
        # 0.990 -> 1.016 and stem additivity 1.086 -> 1.102; off.
        affine_default=False,
        # Measured (docs/metrics.md, Level): restoring brings the level errors (reconstruction,
        # gains 0.25 to 4) from 2.69 dB to 0.10 dB on average; on.
        restore_loudness=True,
    ),
    ModelSource(
        name="m2l-small",
        kind="embedded",
        filenames=("m2l-small.safetensors",),
        sha256={
            "m2l-small.safetensors": (
                "979977a2c627c4b403e16608b4c8f968d7fe0a3dbabc2f7e351c5c2cbc0270d8"
            )
        },
        description="small music2latent-style model shipped with lincae (no linearity training)",
        licence="MIT",
        # Measured (docs/latent-algebra.md): the correction lowers its separation ratio
        # 1.173 -> 1.075 and stem additivity 1.513 -> 1.147; on.
        affine_default=True,
        # Measured (docs/metrics.md, Level): restoring brings the level errors from 5.82 dB to
        # 0.20 dB on average; on.
        restore_loudness=True,
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


def registered_affine_default(name: str, sha256: str) -> bool | None:
    """The registry's measured ``affine_default`` for the model file called ``name`` whose bytes
    hash to ``sha256``; None when that name and digest are not a registered pair."""
    source = REGISTRY.get(name)
    if source is None or sha256 not in source.sha256.values():
        return None
    return source.affine_default


def registered_restore_loudness(name: str, sha256: str) -> bool | None:
    """The registry's measured ``restore_loudness`` for the model file called ``name`` whose
    bytes hash to ``sha256``; None when that name and digest are not a registered pair."""
    source = REGISTRY.get(name)
    if source is None or sha256 not in source.sha256.values():
        return None
    return source.restore_loudness


def list_models() -> list[ModelSource]:
    """All registered models, in display order."""
    return list(REGISTRY.values())


def default_model() -> tuple[str, str]:
    """The model used where none is given (encoding, eval) and where that comes from:
    (``$LINCAE_MODEL``, ``"LINCAE_MODEL"``) when the variable is set and not empty, else
    (`DEFAULT_MODEL`, `BUILT_IN`). Read at each call; a value that is no model spec is an
    error naming the variable."""
    spec = os.environ.get(MODEL_ENVIRONMENT_VARIABLE, "").strip()
    if not spec:
        return DEFAULT_MODEL, BUILT_IN
    try:
        parse_model_spec(spec)
    except LincaeError as error:
        raise LincaeError(f"{MODEL_ENVIRONMENT_VARIABLE}={spec}: {error}") from None
    return spec, MODEL_ENVIRONMENT_VARIABLE


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
