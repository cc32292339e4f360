"""engine/allocator.py: freed memory is reused instead of faulted in again (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Forward passes in miniature: several blocks of a few sizes alive at once, freed, and the
# same again; prints the page faults of four such windows after the first.
SCRIPT = """
import resource, sys
import numpy as np
from lincae_cli.engine.allocator import keep_freed_memory
taken = keep_freed_memory() if sys.argv[1] == "tuned" else None
def window():
    blocks = [np.ones(n * 2**18, np.float32) for n in (1, 3, 8, 20, 8, 3, 40)]
    return sum(float(block[0]) for block in blocks)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
window()
before = faults()
for _ in range(4):
    window()
print(taken, faults() - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    taken, faults = done.stdout.split()
    return taken, int(faults)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_windows_reuse_freed_pages_instead_of_faulting_them_in_again() -> None:
    taken, tuned = _faults("tuned")
    _, plain = _faults("plain")
    assert taken == "True"
    # glibc's defaults give 83 MiB of blocks back and fault many of them in again (14.6 k
    # faults measured); kept, the next windows fault nothing in.
    assert plain >= 4000, plain
    assert tuned <= 1000, tuned


def test_freed_memory_is_kept_as_the_engine_plans_or_as_the_variable_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lincae_cli.engine import allocator

    calls: list[bool] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.delenv(allocator.ENVIRONMENT_VARIABLE, raising=False)
    assert allocator.keep_freed_memory_if(True) is True
    assert allocator.keep_freed_memory_if(False) is False
    assert len(calls) == 1
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "1")
    assert allocator.keep_freed_memory_if(False) is True
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "0")
    assert allocator.keep_freed_memory_if(True) is False
    assert len(calls) == 2
