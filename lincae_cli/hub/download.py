"""Getting a model's weights onto disk: Hub downloads, checksums, conversion cache.

`resolve_model_file` is the entry point: model spec in, path of a safetensors file in
lincae's format out. Downloads go through ``huggingface_hub.hf_hub_download`` into the
Hugging Face cache; converted models go to lincae's cache (see `cache.py`); nothing is
ever written into the installed packages.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache variables once, when
its ``constants`` module is imported. So that a change made later in the same process (a
test, a notebook) still applies, `hub_settings` reads them again on every call and passes
them to ``hf_hub_download`` as arguments (``endpoint``, ``local_files_only``, ``cache_dir``).
When nothing changed this gives exactly what huggingface_hub would have used.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.resources
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from lincae_cli.errors import LincaeError
from lincae_cli.hub.converted import ConvertFn, converted_model_path, write_converted
from lincae_cli.hub.network import quiet_retries, unresolvable_host
from lincae_cli.hub.registry import (
    CONVERTED_KINDS,
    HUB_KINDS,
    MODEL_FILENAME,
    ModelSource,
    parse_model_spec,
)
from lincae_cli.version import __version__

_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})  # as huggingface_hub.constants._is_true
_DISK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EACCES", "EROFS", "EPERM")
    if hasattr(errno, name)
)
# Transport errors of httpx/httpx2/requests/urllib3, matched by name so that this module does
# not depend on which HTTP client the installed huggingface_hub uses.
_CONNECTION_ERROR_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "PoolTimeout",
        "TimeoutException",
        "NetworkError",
        "ProxyError",
        "RemoteProtocolError",
        "ConnectionError",
        "NewConnectionError",
        "MaxRetryError",
        "SSLError",
    }
)
_HASH_CHUNK_BYTES = 1 << 20
_OFFLINE_SWITCH = "set HF_HUB_OFFLINE=1 to use only the models already on this machine"


@dataclass(frozen=True)
class HubSettings:
    """The Hub configuration in effect for one download."""

    endpoint: str
    cache_dir: Path
    offline: bool
    unresolved_host: str | None = None
    """Set when the endpoint's host name could not be resolved: the cache is used instead."""


def hub_settings() -> HubSettings:
    """Read the Hub configuration from the environment now (see the module docstring).

    A variable that is not set falls back to what huggingface_hub read at import.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or hf_constants.ENDPOINT
    if "HF_HUB_OFFLINE" in os.environ or "TRANSFORMERS_OFFLINE" in os.environ:
        raw = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
        offline = raw.upper() in _TRUE_VALUES
    else:
        offline = hf_constants.HF_HUB_OFFLINE
    return HubSettings(endpoint=endpoint, cache_dir=_hf_hub_cache_dir(), offline=offline)


def _hf_hub_cache_dir() -> Path:
    # Same precedence as huggingface_hub.constants: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
    # HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
    def expand(value: str) -> str:
        return os.path.expandvars(os.path.expanduser(value))

    hf_home = expand(
        os.environ.get(
            "HF_HOME",
            os.path.join(
                os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                "huggingface",
            ),
        )
    )
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(expand(os.environ.get("HF_HUB_CACHE", legacy)))


def fetch_files(source: ModelSource, settings: HubSettings | None = None) -> dict[str, Path]:
    """Download (or find in the Hugging Face cache) every file of a Hub model source.

    Returns local paths keyed by the basename of each repo filename. Files with a known
    sha256 are verified; a mismatching file is removed from the cache before raising.
    Every failure is raised as one `LincaeError` naming the model and what to do. When the
    Hub's host name cannot be resolved, only the cache is looked in (no retries).
    """
    if source.kind not in HUB_KINDS:
        raise ValueError(f"model {source.name!r} of kind {source.kind!r} is not on the Hub")
    settings = settings or hub_settings()
    if not settings.offline:
        host = unresolvable_host(settings.endpoint)
        if host is not None:
            settings = dataclasses.replace(settings, offline=True, unresolved_host=host)
    paths: dict[str, Path] = {}
    for filename in source.filenames:
        path = _download(source, filename, settings)
        expected = source.sha256.get(filename)
        if expected is not None:
            verify_sha256(source, filename, path, expected)
        paths[PurePosixPath(filename).name] = path
    return paths


def _download(source: ModelSource, filename: str, settings: HubSettings) -> Path:
    assert source.repo_id is not None and source.revision is not None
    try:
        with quiet_retries():
            path = hf_hub_download(
                repo_id=source.repo_id,
                filename=filename,
                revision=source.revision,
                cache_dir=settings.cache_dir,
                endpoint=settings.endpoint,
                local_files_only=settings.offline,
                library_name="lincae",
                library_version=__version__,
            )
    except Exception as error:
        message = _describe_download_error(error, source, filename, settings)
        if message is None:
            raise
        raise LincaeError(message) from error
    return Path(path)


def _describe_download_error(
    error: Exception, source: ModelSource, filename: str, settings: HubSettings
) -> str | None:
    """One line saying what went wrong and what to do; None for errors that are bugs."""
    name, repo, revision = source.name, source.repo_id, source.revision
    where = f"'{filename}' of Hub repo '{repo}' at revision '{revision}' (model '{name}')"
    offline = (
        f"HF_HUB_OFFLINE is set and model '{name}' is not in the cache ({settings.cache_dir}); "
        f"run `lincae models pull {name}` while online, or "
        f"{_offline_route(source, settings.endpoint)}"
    )
    work_offline = (
        f"to work offline, {_offline_route(source, settings.endpoint)}; {_OFFLINE_SWITCH}"
    )
    unreachable = (
        f"could not reach the Hugging Face Hub at {settings.endpoint} to download model "
        f"'{name}'; check your network or HF_ENDPOINT; {work_offline}"
    )
    if settings.unresolved_host is not None and isinstance(
        error, (LocalEntryNotFoundError, OfflineModeIsEnabled)
    ):
        return (
            f"cannot reach the Hugging Face Hub: its host '{settings.unresolved_host}' "
            f"({settings.endpoint}) cannot be resolved (offline?) and model '{name}' is not in "
            f"the cache; {work_offline}"
        )
    if isinstance(error, LocalEntryNotFoundError):
        # Raised when nothing was found in the cache after the Hub could not be asked;
        # the reason it could not be asked is in the exception chain.
        cause = error.__cause__
        if settings.offline or any(isinstance(e, OfflineModeIsEnabled) for e in _chain(error)):
            return offline
        if isinstance(cause, HfHubHTTPError):
            return _describe_http_error(cause, where, settings)
        if isinstance(cause, FileMetadataError):
            return (
                f"the server at {settings.endpoint} does not answer like a Hugging Face Hub "
                f"(missing ETag or X-Repo-Commit headers) when asked for {where}; "
                f"check HF_ENDPOINT and your proxy settings"
            )
        return unreachable
    if isinstance(error, OfflineModeIsEnabled):
        return offline
    if isinstance(error, RevisionNotFoundError):
        return f"revision '{revision}' does not exist in Hub repo '{repo}' (model '{name}')"
    if isinstance(error, EntryNotFoundError):
        return f"file {where} was not found on the Hub at {settings.endpoint}"
    if isinstance(error, GatedRepoError):
        return (
            f"Hub repo '{repo}' (model '{name}') is gated: accept its terms on the Hub, "
            f"then log in with `hf auth login`"
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"Hub repo '{repo}' (model '{name}') was not found at {settings.endpoint}, "
            f"or it is private and you are not logged in"
        )
    if isinstance(error, HfHubHTTPError):
        return _describe_http_error(error, where, settings)
    if any(_is_connection_error(e) for e in _chain(error)):
        return unreachable
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return f"the download of {where} was cut short; run the command again"
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return (
            f"could not write {where} into the Hugging Face cache {settings.cache_dir}: "
            f"{error.strerror}; free some space or point HF_HOME elsewhere"
        )
    return None


def _offline_route(source: ModelSource, endpoint: str) -> str:
    """How to get ``source`` onto this machine without the Hub, for error messages."""
    repo, revision = f"{endpoint}/{source.repo_id}", source.revision
    if len(source.filenames) == 1:
        where = f"{repo}/resolve/{revision}/{source.filenames[0]}"
    else:  # several files: the folder they are in, as the Hub's web pages show it
        folder = str(PurePosixPath(source.filenames[0]).parent)
        where = f"{repo}/tree/{revision}" + (f"/{folder}" if folder != "." else "")
    if source.kind in CONVERTED_KINDS:
        files = ", ".join(PurePosixPath(f).name for f in source.filenames)
        return (
            f"download {files} from {where} on a machine that is online, then run "
            f"`lincae models convert FILE... --name {source.name}` here"
        )
    return f"download {where} on a machine that is online, then pass it with --model PATH"


def _describe_http_error(error: HfHubHTTPError, where: str, settings: HubSettings) -> str:
    response = getattr(error, "response", None)
    status = response.status_code if response is not None else "?"
    if status == 404:
        return f"file {where} was not found on the Hub at {settings.endpoint}"
    if status in (401, 403):
        return (
            f"the Hub at {settings.endpoint} refused access to {where} (HTTP {status}); "
            f"log in with `hf auth login`"
        )
    return f"the Hub at {settings.endpoint} answered HTTP {status} for {where}; try again later"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_connection_error(error: BaseException) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _CONNECTION_ERROR_NAMES for cls in type(error).__mro__)


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(source: ModelSource, filename: str, path: Path, expected: str) -> None:
    """Raise if ``path`` does not have the expected digest, after removing it from the cache."""
    actual = sha256_file(path)
    if actual == expected.lower():
        return
    _remove_cached_file(path)
    raise LincaeError(
        f"checksum mismatch for '{filename}' of model '{source.name}': expected sha256 "
        f"{expected}, got {actual}; the corrupted file was removed from the cache, "
        f"run the command again to download it afresh"
    )


def _remove_cached_file(path: Path) -> None:
    # In the Hugging Face cache the returned path is a snapshot symlink to a blob named by
    # its ETag: both must go, or the next call would link the same bad blob again.
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def embedded_weights_dir() -> Path | None:
    """The directory of the installed ``lincae_weights`` package, if there is one on disk.

    From a source checkout that was not installed (``PYTHONPATH=.``), the package is the
    ``weights/`` folder next to ``lincae_cli/``, which is used instead.
    """
    try:
        package = importlib.resources.files("lincae_weights")
    except ModuleNotFoundError:
        checkout_weights = Path(__file__).resolve().parents[2] / "weights"
        return checkout_weights if (checkout_weights / "__init__.py").is_file() else None
    return package if isinstance(package, Path) else None


def embedded_model_path(source: ModelSource) -> Path:
    """Path of an embedded model's safetensors file, or a LincaeError if it is not installed."""
    weights_dir = embedded_weights_dir()
    filename = source.filenames[0]
    path = weights_dir / filename if weights_dir is not None else None
    if path is None or not path.is_file():
        raise LincaeError(
            f"embedded model '{source.name}' is not in this installation (no {filename} in the "
            f"lincae_weights package); reinstall lincae, or choose another model with --model "
            f"(see `lincae models list`)"
        )
    return path


def local_model_path(source: ModelSource) -> Path:
    """Check a ``file`` source and return the safetensors file it designates."""
    assert source.local_path is not None
    path = source.local_path
    if path.is_dir():
        candidate = path / MODEL_FILENAME
        if not candidate.is_file():
            raise LincaeError(f"model directory '{path}' has no {MODEL_FILENAME}")
        return candidate
    if not path.exists():
        raise LincaeError(f"model file '{path}' does not exist")
    if path.suffix != ".safetensors":
        raise LincaeError(
            f"model file '{path}' is not a .safetensors file in lincae's format; convert the "
            f"files of a published checkpoint with `lincae models convert FILE...`, then use "
            f"--model NAME"
        )
    return path


def resolve_model_file(spec: str | ModelSource, convert: ConvertFn | None = None) -> Path:
    """Local path of a safetensors file in lincae's format for a model spec.

    Embedded and local models are used in place; ``hf://`` models are downloaded into the
    Hugging Face cache; published checkpoints are downloaded once, converted with
    ``convert`` (default: ``converted.convert_with_builtin_converter``) and the result cached,
    so later calls need no network.
    """
    source = parse_model_spec(spec) if isinstance(spec, str) else spec
    if source.kind == "embedded":
        return embedded_model_path(source)
    if source.kind == "file":
        return local_model_path(source)
    if source.kind in CONVERTED_KINDS:
        out_path = converted_model_path(source)
        if out_path.is_file():
            return out_path
        return write_converted(source, fetch_files(source), convert)
    (path,) = fetch_files(source).values()
    return path
