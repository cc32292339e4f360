"""Where one `lincae` run's time goes: the model's calls timed inside a whole CLI process.

    python benchmarks/profile_cli.py decode song.lat -o song.wav --model lin-cae -f
    python benchmarks/profile_cli.py encode song.wav -o song.lat

Runs ``lincae ARGS`` in this process with timers around the model's networks (encoder,
decoder), the inverse STFT and model loading, then prints to stderr: the wall time from the
start of this script, the time to import torch and lincae, each timed part with its number
of calls, the process's user and system CPU time, its peak RSS and its page faults (system time
and minor faults are what the allocator settings of engine/allocator.py change).
"""

from __future__ import annotations

import time

START = time.perf_counter()

import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402, F401

TORCH_IMPORTED = time.perf_counter() - START
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lincae_cli.cli import app  # noqa: E402
from lincae_cli.hub import store  # noqa: E402
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder  # noqa: E402
from lincae_cli.nn.frontend import SpectralFrontend  # noqa: E402

seconds: dict[str, float] = {}
calls: dict[str, int] = {}


def timed(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` by the same callable, timed under ``label``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
            calls[label] = calls.get(label, 0) + 1

    setattr(owner, name, wrapper)


def main() -> int:
    timed(ConsistencyAutoencoder, "encode_representation", "encoder network")
    timed(ConsistencyAutoencoder, "decode_representation", "decoder network")
    timed(SpectralFrontend, "to_waveform", "inverse STFT")
    timed(store, "load_model", "model loading")  # looked up when called (engine/inference.py)
    imported = time.perf_counter() - START
    code = app.main(sys.argv[1:])
    wall = time.perf_counter() - START
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = [
        f"wall {wall:.2f} s: import torch {TORCH_IMPORTED:.2f} s, all imports {imported:.2f} s",
        *(f"  {label}: {seconds[label]:.2f} s in {calls[label]} calls" for label in seconds),
        f"  the rest: {wall - imported - sum(seconds.values()):.2f} s",
        f"CPU user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s, peak RSS "
        f"{usage.ru_maxrss / 1024:.0f} MiB, minor page faults {usage.ru_minflt}",
    ]
    print("\n".join(report), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
