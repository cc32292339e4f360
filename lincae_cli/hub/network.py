"""The network around huggingface_hub's downloads: a Hub host that cannot be resolved, and
huggingface_hub's retry messages.

huggingface_hub retries a failed request five times over about 23 s and prints a warning for
each attempt. For transient failures (a refused connection, a timeout, HTTP 5xx) the retries
stay, but their messages go to this module's logger at INFO, shown by ``lincae --verbose``.
When the Hub's host name cannot be resolved at all (no network, a mistyped ``HF_ENDPOINT``)
retrying cannot help: `unresolvable_host` finds that out with one lookup before downloading,
and the download then only looks in the cache (see ``download.fetch_files``).
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# huggingface_hub's modules that warn about retries (`http_backoff`) and resumed downloads.
_RETRY_LOGGERS = ("huggingface_hub.utils._http", "huggingface_hub.file_download")


def unresolvable_host(endpoint: str) -> str | None:
    """The host of ``endpoint`` if this machine cannot resolve its name, else None.

    Also None when a proxy is configured for the endpoint (``HTTPS_PROXY``, ``ALL_PROXY``, ...
    without a matching ``NO_PROXY``): the proxy resolves names then, not this machine.
    """
    parts = urlsplit(endpoint)
    try:
        host, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:  # a malformed port: the download reports it
        return None
    if not host:
        return None
    proxies = urllib.request.getproxies_environment()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not (
        urllib.request.proxy_bypass_environment(host, proxies)
    ):
        return None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return host
    except (OSError, UnicodeError):
        return None  # not a name-resolution failure: the download reports it
    return None


class _RetriesToInfo(logging.Filter):
    """Drops huggingface_hub's warnings, logging them again at INFO on this module's logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        logger.info("%s", record.getMessage())
        return False


@contextmanager
def quiet_retries() -> Iterator[None]:
    """While open, huggingface_hub's retry and resume warnings are INFO messages of this
    module's logger instead of lines on stderr (its errors still show)."""
    hub_filter = _RetriesToInfo()
    loggers = [logging.getLogger(name) for name in _RETRY_LOGGERS]
    for hub_logger in loggers:
        hub_logger.addFilter(hub_filter)
    try:
        yield
    finally:
        for hub_logger in loggers:
            hub_logger.removeFilter(hub_filter)
