"""A fake Hugging Face Hub on 127.0.0.1 for offline tests of model downloads.

It answers the two requests ``hf_hub_download`` makes, as the real Hub does:

- ``HEAD /{owner}/{repo}/resolve/{revision}/{filename}``: metadata. Small files answer 200
  with ``ETag`` (git blob sha1), ``Content-Length`` and ``X-Repo-Commit``. LFS files (weights)
  answer 302 to a "CDN" (a second server, so a different origin) with ``X-Linked-Etag``
  (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``.
- ``GET`` on the same path (small files) or on the CDN location (LFS files): the bytes.

Errors carry the ``X-Error-Code`` header huggingface_hub turns into typed errors:
``RepoNotFound`` (401), ``RevisionNotFound`` / ``EntryNotFound`` (404).

Usage::

    with FakeHub() as hub:
        hub.add_file("owner/repo", "model.safetensors", data)
        isolate_hub_environment(monkeypatch, tmp_path, hub.url)
        ...
        assert hub.count("GET", "model.safetensors") == 1

Switches: ``hub.missing`` (filenames answered 404 although present), ``hub.corrupt``
(filenames served with one byte flipped but the original ETag and size), ``hub.status_override``
(answer every request with this status). Every request is logged in ``hub.requests``.
For a subprocess, pass ``hub_environment(root, hub.url)`` as extra environment variables.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import types
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

_LFS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npz")


@dataclass(frozen=True)
class HubRequest:
    """One request received by the fake Hub or its CDN."""

    method: str
    path: str
    filename: str | None


@dataclass(frozen=True)
class _HostedFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


def commit_hash_for(repo_id: str) -> str:
    """The (fixed) commit that ``main`` points to in a fake repo."""
    return hashlib.sha1(f"commit of {repo_id}".encode()).hexdigest()


class FakeHub:
    """A threaded loopback HTTP server imitating the Hub's ``resolve`` endpoint."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], _HostedFile] = {}
        self._lock = threading.Lock()
        self.requests: list[HubRequest] = []
        self.missing: set[str] = set()
        self.corrupt: set[str] = set()
        self.status_override: int | None = None
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.cdn_url = ""

    # -- content ---------------------------------------------------------------------------

    def add_file(
        self, repo_id: str, filename: str, data: bytes, *, lfs: bool | None = None
    ) -> None:
        """Host ``data`` as ``filename`` in ``repo_id`` (branch ``main``)."""
        is_lfs = filename.endswith(_LFS_SUFFIXES) if lfs is None else lfs
        self._files[(repo_id, filename)] = _HostedFile(data, is_lfs)

    def count(self, method: str | None = None, filename: str | None = None) -> int:
        """Number of requests received, optionally only of one method and/or one file."""
        with self._lock:
            return sum(
                1
                for request in self.requests
                if (method is None or request.method == method)
                and (filename is None or request.filename == filename)
            )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub_server = self._serve(_make_handler(self, cdn=False))
        cdn_server = self._serve(_make_handler(self, cdn=True))
        self.url = f"http://127.0.0.1:{hub_server.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{cdn_server.server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        # A short poll interval keeps shutdown() (and so each test's teardown) fast.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-hub",
            daemon=True,
        )
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    # -- request handling (called from server threads) ---------------------------------------

    def _log(self, method: str, path: str, filename: str | None) -> None:
        with self._lock:
            self.requests.append(HubRequest(method, path, filename))

    def _body(self, filename: str, hosted: _HostedFile) -> bytes:
        if filename in self.corrupt and hosted.data:
            return bytes([hosted.data[0] ^ 0xFF]) + hosted.data[1:]
        return hosted.data

    def _find_by_sha256(self, sha256: str) -> tuple[str, _HostedFile] | None:
        for (_, filename), hosted in self._files.items():
            if hosted.lfs and hosted.sha256 == sha256:
                return filename, hosted
        return None

    def _resolve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            self._log(method, path, None)
            _respond(handler, method, 404, {}, b"not found")
            return
        owner, repo, _, revision, filename = parts
        repo_id = f"{owner}/{repo}"
        self._log(method, path, filename)
        commit = commit_hash_for(repo_id)
        if self.status_override is not None:
            _respond(handler, method, self.status_override, {}, b"fake hub failure")
            return
        if not any(key[0] == repo_id for key in self._files):
            headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            _respond(handler, method, 401, headers, b"repository not found")
            return
        if revision not in ("main", commit):
            headers = {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}
            _respond(handler, method, 404, headers, b"revision not found")
            return
        hosted = self._files.get((repo_id, filename))
        if hosted is None or filename in self.missing:
            headers = {
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
                "X-Repo-Commit": commit,
            }
            _respond(handler, method, 404, headers, b"entry not found")
            return
        if hosted.lfs:
            headers = {
                "Location": f"{self.cdn_url}/cdn/{hosted.sha256}",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{hosted.sha256}"',
                "X-Linked-Size": str(len(hosted.data)),
                "ETag": f'"{hosted.git_sha1}"',
            }
            _respond(handler, method, 302, headers, b"")
            return
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hosted.git_sha1}"'}
        _respond(handler, method, 200, headers, self._body(filename, hosted))

    def _serve_cdn(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        found = self._find_by_sha256(path.rsplit("/", 1)[-1]) if path.startswith("/cdn/") else None
        self._log(method, path, found[0] if found else None)
        if found is None:
            _respond(handler, method, 404, {}, b"no such object")
            return
        filename, hosted = found
        _respond(handler, method, 200, {"ETag": f'"{hosted.sha256}"'}, self._body(filename, hosted))


def _respond(
    handler: BaseHTTPRequestHandler, method: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    if method == "GET":
        handler.wfile.write(body)


def _make_handler(hub: FakeHub, *, cdn: bool) -> type[BaseHTTPRequestHandler]:
    serve = hub._serve_cdn if cdn else hub._resolve

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 and "Connection: close": no kept-alive connection outlives a test.
        protocol_version = "HTTP/1.0"

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            serve(self, "HEAD")

        def do_GET(self) -> None:  # noqa: N802
            serve(self, "GET")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep pytest output clean

    return Handler


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def hub_environment(root: Path, endpoint: str) -> dict[str, str]:
    """Environment variables pointing a (sub)process at ``endpoint`` with caches under ``root``."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(root / "hf-home"),
        "LINCAE_CACHE": str(root / "lincae-cache"),
        # Stops huggingface_hub from fetching its AI-agent registry from the real Hub.
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def isolate_hub_environment(monkeypatch: pytest.MonkeyPatch, root: Path, endpoint: str) -> None:
    """Point this process at ``endpoint`` with fresh caches under ``root``, for one test."""
    for name in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "XDG_CACHE_HOME",
        "HF_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in hub_environment(root, endpoint).items():
        monkeypatch.setenv(name, value)
    # Read by huggingface_hub at import only, hence patched in its constants module.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def skip_hub_retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make huggingface_hub's retry back-off (about 23 s when the Hub is unreachable) instant.

    Returns the list the skipped sleep durations are appended to.
    """
    from huggingface_hub.utils import _http

    slept: list[float] = []
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=slept.append))
    return slept
