"""Published checkpoints in lincae's format: where converted models are kept, the converter of
each kind, and the files of a checkpoint downloaded by hand (`lincae models convert`).

A published checkpoint (linear-cae: the four files of a ``<hash>_weights/`` folder, a ``.pth``
and three YAML configs; music2latent: ``music2latent.pt``) is converted once into
`converted_model_path` in lincae's cache, where ``--model NAME`` finds it without a network.
The Hub path (``download.resolve_model_file``) and `convert_local_files` write that same file
through `write_converted`, with the same converter (``convert.py``: ``weights_only`` loading).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from lincae_cli.errors import LincaeError
from lincae_cli.hub.cache import atomic_output, converted_models_dir
from lincae_cli.hub.registry import CONVERTED_KINDS, REGISTRY, ModelSource

ConvertFn = Callable[[ModelSource, dict[str, Path], Path], None]
"""``convert(source, files, out_path)``: write ``source``'s ``files`` (local paths keyed by
basename) as one safetensors file in lincae's format at ``out_path``."""


CONVERTED_FRAME_ROUNDING: dict[str, str] = {"linear-cae": "ceil", "music2latent": "floor"}
"""Each converted kind's `ModelConfig.latent_frame_rounding`: its reference package's framing
(linear-cae pads the last latent frame, music2latent's inference crops to whole latent frames)."""


def current_conversion_config(config: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """The recorded config of a model file, with what a conversion written before a config key
    existed lacks: ``latent_frame_rounding`` (a music2latent model converted before it was a
    key is read as "floor", its reference's rule, without converting it again)."""
    kind = provenance.get("converted_from")
    if kind in CONVERTED_FRAME_ROUNDING and "latent_frame_rounding" not in config:
        return {**config, "latent_frame_rounding": CONVERTED_FRAME_ROUNDING[kind]}
    return config


def converted_model_path(source: ModelSource) -> Path:
    """Where the converted form of a published checkpoint is kept."""
    revision = (source.revision or "main").replace("/", "_")
    return converted_models_dir() / f"{source.name}-{revision}.safetensors"


def convert_with_builtin_converter(source: ModelSource, files: dict[str, Path], out: Path) -> None:
    """The default `ConvertFn`: dispatch to ``lincae_cli.hub.convert`` by model kind."""
    module_name = "lincae_cli.hub.convert"
    try:
        converters = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise LincaeError(
            f"model '{source.name}' must be converted to lincae's format, but this installation "
            f"has no converter ({module_name})"
        ) from error
    if source.kind == "linear-cae":
        converters.convert_linear_cae(
            files, out, name=source.name, scale_factor=source.scale_factor
        )
    elif source.kind == "music2latent":
        converters.convert_music2latent(files, out, name=source.name)
    else:
        raise ValueError(f"no converter for model kind {source.kind!r}")


def write_converted(
    source: ModelSource, files: dict[str, Path], convert: ConvertFn | None = None
) -> Path:
    """Convert ``files`` (keyed by basename) into `converted_model_path`, atomically."""
    out_path = converted_model_path(source)
    with atomic_output(out_path) as partial_path:
        (convert or convert_with_builtin_converter)(source, files, partial_path)
    return out_path


def _published() -> list[ModelSource]:
    return [source for source in REGISTRY.values() if source.kind in CONVERTED_KINDS]


def _basename(filename: str) -> str:
    return PurePosixPath(filename).name


def expected_files() -> str:
    """The files `convert_local_files` accepts, per kind, for help texts and errors."""
    per_kind: dict[str, list[str]] = {}
    for source in _published():
        per_kind.setdefault(source.kind, [_basename(f) for f in source.filenames])
    return "; ".join(f"{kind}: {' + '.join(names)}" for kind, names in per_kind.items())


def _gather(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """The checkpoint files among ``paths`` (files, or folders searched one level), by name."""
    known = {_basename(f) for source in _published() for f in source.filenames}
    found: dict[str, Path] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.name in known and p.is_file())
            if not candidates:
                raise LincaeError(f"{path}: no checkpoint file in this folder{_look_in(path)}")
        elif path.is_file():
            if path.name not in known:
                raise LincaeError(
                    f"{path}: not a file of a published checkpoint (expected {expected_files()})"
                )
            candidates = [path]
        else:
            raise LincaeError(f"{path}: no such file or folder")
        for candidate in candidates:
            earlier = found.setdefault(candidate.name, candidate)
            if earlier.resolve() != candidate.resolve():
                raise LincaeError(
                    f"two files named {candidate.name} ({earlier}, {candidate}): give the "
                    f"files of one checkpoint at a time"
                )
    return found


def _look_in(folder: Path) -> str:
    """Where to look instead of ``folder``: its ``<hash>_weights`` subfolders, if any."""
    subfolders = sorted(p.name for p in folder.glob("*_weights") if p.is_dir())
    if len(subfolders) == 1:
        return f", but in its subfolder {subfolders[0]}: give that"
    if subfolders:
        return f", but in its subfolders {', '.join(subfolders)}: give one of them"
    return f" (expected {expected_files()})"


def _folder_source(found: dict[str, Path], kind: str) -> ModelSource | None:
    """The model whose Hub folder (``<hash>_weights``) holds the files, if their folder is one."""
    folders = {path.resolve().parent.name for path in found.values()}
    for source in _published():
        hub_folders = {str(PurePosixPath(f).parent) for f in source.filenames}
        if source.kind == kind and hub_folders != {"."} and hub_folders == folders:
            return source
    return None


def identify(
    paths: Sequence[str | os.PathLike[str]], name: str | None = None
) -> tuple[ModelSource, dict[str, Path]]:
    """The published model whose files ``paths`` are, and those files keyed by basename.

    ``name`` picks among the models of a kind; it is needed only when the files do not tell
    (linear-cae files outside their ``<hash>_weights`` folder).
    """
    found = _gather(paths)
    kinds = {s.kind for s in _published() for f in s.filenames if _basename(f) in found}
    if len(kinds) != 1:
        raise LincaeError(
            f"{', '.join(sorted(found)) or 'no files'} belong to different kinds of checkpoint "
            f"({', '.join(sorted(kinds))}); convert one checkpoint at a time"
        )
    kind = kinds.pop()
    choices = [source for source in _published() if source.kind == kind]
    by_folder = _folder_source(found, kind)
    if name is not None:
        source = REGISTRY.get(name)
        if source is None or source.kind != kind:
            raise LincaeError(
                f"--name {name}: not a published {kind} model; these files can be converted as "
                f"{', '.join(choice.name for choice in choices)}"
            )
        if by_folder is not None and by_folder is not source:
            folder = next(iter(found.values())).resolve().parent.name
            raise LincaeError(
                f"the files are in {folder}/, the Hub folder of model '{by_folder.name}', "
                f"not of '{name}'; leave out --name, or check the files"
            )
    elif by_folder is not None:
        source = by_folder
    elif len(choices) == 1:
        source = choices[0]
    else:
        raise LincaeError(
            f"cannot tell which {kind} model these files are (their folder is not named "
            f"<hash>_weights as on the Hub): pass --name "
            f"{'|'.join(choice.name for choice in choices)}"
        )
    names = [_basename(f) for f in source.filenames]
    missing = [basename for basename in names if basename not in found]
    if missing:
        raise LincaeError(
            f"model '{source.name}' also needs {', '.join(missing)} (its files: {', '.join(names)})"
        )
    return source, {basename: found[basename] for basename in names}


def convert_local_files(
    paths: Sequence[str | os.PathLike[str]],
    name: str | None = None,
    convert: ConvertFn | None = None,
) -> tuple[ModelSource, Path]:
    """Convert a published checkpoint's files, downloaded by hand, into lincae's cache.

    ``paths`` are the files, or folders holding them; see `identify` for ``name``. Files with
    a sha256 in the registry are checked first. Returns the model and the converted file, the
    one ``--model NAME`` then uses (it replaces an earlier conversion of that model).
    """
    from lincae_cli.hub.store import file_sha256  # torch: converting needs it anyway

    source, files = identify(paths, name)
    for filename, digest in source.sha256.items():
        path = files[_basename(filename)]
        if file_sha256(path) != digest.lower():
            raise LincaeError(
                f"{path}: not the published {_basename(filename)} of model '{source.name}' "
                f"(its sha256 is not {digest}); download it again"
            )
    return source, write_converted(source, files, convert)
