"""Freed tensor memory stays in the process for the next window (glibc's malloc).

PyTorch's CPU tensors come from malloc. glibc serves large blocks with ``mmap`` and hands them
back to the kernel when freed (and trims the heap's top above 128 KiB), so a loop of forward
passes over same-sized windows maps, faults in and unmaps its activations again for every
window: encoding 5 minutes of stereo with lincae-small took 6.7 M page faults, and the kernel
time was 40 % of the CPU time on 2 cores. Taking every block from the heap and never trimming
it makes the next window reuse the same pages: the forward passes ran 1.6-2.1x faster (encode)
and 1.4-1.5x (decode) at about the same peak memory (benchmarks/bench_cli_overhead.py;
docs/speed.md).

The heap then keeps what the largest blocks freed, and blocks of other sizes cannot always
reuse it: with the published size's 10-s windows the peak grew from 1.6-1.9 GB to 2.1-3.5 GiB.
So the engine keeps freed memory only where its estimate of the process, grown by that
fragmentation, stays within its memory budget (`engine.device.plan_memory`, which shortens the
default chunk to make it fit where that is worth it); ``LINCAE_KEEP_FREED_MEMORY=1`` (or ``0``)
decides instead. Only glibc has these knobs (`mallopt`); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_LARGEST = 2**31 - 1  # mallopt takes an int
ENVIRONMENT_VARIABLE = "LINCAE_KEEP_FREED_MEMORY"


def keep_freed_memory_if(wanted: bool) -> bool:
    """`keep_freed_memory` if ``wanted`` (the engine's plan), or as ``$LINCAE_KEEP_FREED_MEMORY``
    (1 or 0) says. Returns whether freed memory is kept."""
    forced = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if forced in ("0", "1"):
        wanted = forced == "1"
    return wanted and keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Serve every allocation from the heap (no ``mmap``) and do not trim the heap, for the
    rest of this process. Returns whether the C library took the settings (glibc)."""
    try:  # the C library this process runs on: its symbols are the process's own
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (no mallopt), or Windows
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
