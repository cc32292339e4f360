"""Wall time of latent-only commands (info, gain, mix, trim, pad, fade, concat) on a 5-minute
stereo .lat, as whole processes: the target is <= 0.3 s each on 2 cores (issue 14).

Side by side in one run: each command as it runs now (NumPy and safetensors only), the same
command in a process that also imports torch first (what every latent command cost before
they stopped importing it), and the floor of starting Python at all. Reports medians and the
ratio torch-imported / now.

    python benchmarks/bench_latent_ops.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry, write_lat

RUN = "import sys\nfrom lincae_cli.cli.app import main\nsys.exit(main(sys.argv[1:]))\n"
RUN_WITH_TORCH = "import torch\n" + RUN


def five_minute_lat(path: Path) -> None:
    """A stereo .lat of 5 minutes at 44.1 kHz with the embedded models' layout."""
    rate, hop, seconds = 44100, 4096, 300
    num_samples = seconds * rate
    frames = -(-(max(1, (num_samples - 2048) // 512 + 1)) // 8)
    rng = np.random.default_rng(0)
    meta = LatentMeta(
        model_name="bench",
        model_sha256="ab" * 32,
        scale_factor=1.0,
        model_sample_rate=rate,
        source_sample_rate=rate,
        num_samples=num_samples,
        channels=2,
        latent_rate_hz=rate / hop,
        latent_hop_samples=hop,
        chunking={"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048},
        source_loudness_lufs=-14.0,
        silence_latent=[0.1] * 64,
        provenance=[provenance_entry("encode", input="bench.wav")],
    )
    latents = rng.standard_normal((2, 64, frames)).astype(np.float32)
    write_lat(path, LatentFile(latents, meta))


# As installed lincae runs: with its bytecode cached (an environment that sets
# PYTHONDONTWRITEBYTECODE would make every run compile lincae's modules again, ~0.05 s).
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def timed(code: str, args: list[str], rounds: int) -> float:
    times = []
    for round_ in range(rounds + 1):  # the first run writes the bytecode; not counted
        start = time.perf_counter()
        command = [sys.executable, "-c", code, *args]
        done = subprocess.run(command, capture_output=True, env=ENVIRONMENT)
        if round_:
            times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{args}: {done.stderr.decode().strip()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as folder:
        song, out = Path(folder) / "song.lat", str(Path(folder) / "out.lat")
        five_minute_lat(song)
        s = str(song)
        commands = {
            "info": ["info", s],
            "gain -6": ["gain", s, "-6", "-o", out, "-f"],
            "gain --affine": ["gain", s, "-6", "--affine", "-o", out, "-f"],
            "mix": ["mix", s, s, "-o", out, "-f"],
            "trim": ["trim", s, "1:00", "+30", "-o", out, "-f"],
            "pad": ["pad", s, "--start", "2", "-o", out, "-f"],
            "fade": ["fade", s, "--in", "3", "--out", "5", "-o", out, "-f"],
            "gain --envelope": ["gain", s, "--envelope", "0:0,60:-12,120:0", "-o", out, "-f"],
            "concat": ["concat", s, s, "--crossfade", "2", "-o", out, "-f"],
        }
        floor = timed("pass", [], rounds)
        print(f"5-minute stereo .lat, median of {rounds} runs; Python start-up alone {floor:.3f} s")
        print(f"{'command':18} {'now (s)':>8} {'+ import torch (s)':>19} {'ratio':>6}")
        for name, args in commands.items():
            now = timed(RUN, args, rounds)
            before = timed(RUN_WITH_TORCH, args, rounds)
            print(f"{name:18} {now:8.3f} {before:19.3f} {before / now:6.2f}")


if __name__ == "__main__":
    main()
