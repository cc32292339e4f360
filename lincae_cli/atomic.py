"""Atomic file output: write a temporary file beside the target, then rename it over.

Readers see either the old file or the complete new one: an interrupted run (exception,
Ctrl-C, crash) never leaves a partial file at the target path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lincae_cli.errors import LincaeError

_PARTIAL = ".partial"
_TAG_LENGTH = 12  # hex digits of a temporary file's random tag


class AtomicFile:
    """A temporary path beside ``target``: write it, then `commit` (fsync and rename over the
    target) or `discard` (remove it; the target is left as it was).

    For writers that outlive one block of code (a streamed audio file); `atomic_output` is the
    same as a context manager. The temporary name starts with a dot (folder scans skip it) and
    keeps ``target``'s suffix, because some writers (soundfile, numpy) choose the format from
    the extension.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = self.target.with_name(
            f".{self.target.stem}.{uuid.uuid4().hex[:_TAG_LENGTH]}{_PARTIAL}{self.target.suffix}"
        )

    def commit(self) -> None:
        """Make the written temporary file the target, durably."""
        try:
            _fsync_file(self.temporary)
            os.replace(self.temporary, self.target)
            _fsync_directory(self.target.parent)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary file (if any); safe to call more than once."""
        self.temporary.unlink(missing_ok=True)


def partial_files(folder: str | os.PathLike[str]) -> dict[Path, list[Path]]:
    """The temporary files of `AtomicFile` writers still in ``folder``, by target: left by a
    writer that was killed (SIGKILL, power loss) before it could commit or discard them."""
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found: dict[Path, list[Path]] = {}
    for name in names:
        # ".{stem}.{tag}.partial{suffix}", the name `AtomicFile` gives its temporary file
        marker = name.rfind(_PARTIAL)
        head, suffix = name[1:marker], name[marker + len(_PARTIAL) :]
        stem, tag = head[: -_TAG_LENGTH - 1], head[-_TAG_LENGTH - 1 :]
        if name.startswith(".") and marker > 0 and tag[:1] == "." and _is_tag(tag[1:]):
            found.setdefault(folder / f"{stem}{suffix}", []).append(folder / name)
    return found


def _is_tag(text: str) -> bool:
    return len(text) == _TAG_LENGTH and all(c in "0123456789abcdef" for c in text)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The caller writes (or has a library write) the temporary file; on a clean exit it is
    fsynced and renamed over ``path``, so readers see either the old file or the complete
    new one, never a partial file. On an exception the temporary file is removed and
    ``path`` is left untouched.
    """
    atomic = AtomicFile(path)
    try:
        yield atomic.temporary
    except BaseException:
        atomic.discard()
        raise
    atomic.commit()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `atomic_output`).

    The target's folder must exist; a failure to write (missing or read-only folder, full
    disk) is a LincaeError naming the file.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise LincaeError(f"{target}: directory {target.parent} does not exist")
    try:
        with atomic_output(target) as temporary:
            temporary.write_bytes(data)
    except OSError as error:
        raise LincaeError(f"{target}: cannot write ({error.strerror or error})") from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory (Windows).
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
