"""End-to-end speed and memory of `lincae encode` / `lincae decode`, as users run them.

    python benchmarks/bench_cli.py                       # the embedded default model
    python benchmarks/bench_cli.py --model /tmp/small.safetensors --long-minutes 5
    python benchmarks/bench_cli.py --random-preset small # random weights of a preset (no model)

Three measurements, each command in a fresh process (wall time and that process's peak RSS):

1. a batch of ``--files`` clips of ``--seconds`` (stereo, 44.1 kHz) through ``lincae encode
   DIR -o LAT/`` then ``lincae decode LAT/ -o WAV/``;
2. the same clips encoded one process per file (the baseline batching must beat by 1.5x);
3. one ``--long-minutes`` file through encode and decode (peak RSS must stay under 2 GB).

x-realtime is seconds of audio per second of wall time. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 44100
RSS_LIMIT_BYTES = 2 * 1024**3


def music_like(seconds: float, seed: int, start: int = 0) -> np.ndarray:
    """Stereo float32 ``[samples, 2]``: a few detuned partials, a pulse and a little noise."""
    rng = np.random.default_rng(seed)
    t = (start + np.arange(int(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    base = 110.0 * 2 ** (seed % 12 / 12)
    left = sum(0.15 / k * np.sin(2 * np.pi * base * k * t) for k in range(1, 6))
    right = sum(0.15 / k * np.sin(2 * np.pi * base * k * 1.003 * t + k) for k in range(1, 6))
    pulse = 0.2 * (np.sin(2 * np.pi * 2 * t) > 0.95)
    noise = 0.02 * rng.standard_normal((2, t.size))
    return np.stack([left + pulse + noise[0], right + pulse + noise[1]], axis=1).astype(np.float32)


def write_long(path: Path, minutes: float) -> None:
    """Written a minute at a time so the benchmark itself stays small."""
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 2, subtype="PCM_16") as out:
        for minute in range(int(np.ceil(minutes))):
            seconds = min(60.0, minutes * 60 - minute * 60)
            out.write(music_like(seconds, seed=7, start=minute * 60 * SAMPLE_RATE))


def run(args: list[str]) -> tuple[float, int]:
    """Run ``lincae ARGS`` in a new process: (wall seconds, peak RSS bytes of that process)."""
    command = [sys.executable, "-m", "lincae_cli.cli.app", *args]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"lincae {' '.join(args)} failed:\n{errors.decode()}")
    return wall, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="--model for lincae (default: the embedded model)")
    parser.add_argument(
        "--random-preset", help="save a random-weight model of this preset and use it"
    )
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-per-file", action="store_true")
    parser.add_argument("--extra", default="", help="more lincae options, e.g. '--batch-size 2'")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp folder)")
    options = parser.parse_args()

    work = options.workdir or Path(tempfile.mkdtemp(prefix="lincae-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_args: list[str] = []
    label = "embedded default model"
    if options.random_preset:
        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from lincae_cli.hub.store import save_model
        from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
        from lincae_cli.nn.config import preset

        torch.manual_seed(0)
        path = work / f"random-{options.random_preset}.safetensors"
        model = ConsistencyAutoencoder(preset(options.random_preset))
        save_model(model, path, name=f"random-{options.random_preset}")
        model_args, label = ["--model", str(path)], f"random {options.random_preset} preset"
    elif options.model:
        model_args, label = ["--model", options.model], options.model
    common = [*model_args, "--quiet", *options.extra.split()]

    clips = work / "clips"
    clips.mkdir(exist_ok=True)
    for index in range(options.files):
        soundfile.write(
            clips / f"clip{index:02d}.wav", music_like(options.seconds, index), SAMPLE_RATE
        )
    batch_seconds = options.files * options.seconds
    rows = []

    for folder in ("lat", "wav", "lat-single"):
        shutil.rmtree(work / folder, ignore_errors=True)
    wall, rss = run(["encode", str(clips), "-o", str(work / "lat"), *common])
    rows.append(
        (f"encode {options.files} x {options.seconds:g} s, one process", batch_seconds, wall, rss)
    )
    encode_batch_wall = wall
    wall, rss = run(["decode", str(work / "lat"), "-o", str(work / "wav"), *common])
    rows.append(
        (f"decode {options.files} x {options.seconds:g} s, one process", batch_seconds, wall, rss)
    )

    if not options.skip_per_file:
        total, peak = 0.0, 0
        (work / "lat-single").mkdir()
        for clip in sorted(clips.iterdir()):
            wall, rss = run(
                ["encode", str(clip), "-o", str(work / "lat-single" / f"{clip.stem}.lat"), *common]
            )
            total, peak = total + wall, max(peak, rss)
        rows.append(
            (
                f"encode {options.files} x {options.seconds:g} s, a process per file",
                batch_seconds,
                total,
                peak,
            )
        )
        speedup = total / encode_batch_wall

    if not options.skip_long:
        long_file = work / "long.wav"
        if not long_file.exists():
            write_long(long_file, options.long_minutes)
        long_seconds = options.long_minutes * 60
        for target in (work / "long.lat", work / "long-decoded.wav"):
            target.unlink(missing_ok=True)
        wall, long_encode_rss = run(
            ["encode", str(long_file), "-o", str(work / "long.lat"), *common]
        )
        rows.append(
            (f"encode one {options.long_minutes:g} min file", long_seconds, wall, long_encode_rss)
        )
        wall, rss = run(
            ["decode", str(work / "long.lat"), "-o", str(work / "long-decoded.wav"), *common]
        )
        rows.append((f"decode one {options.long_minutes:g} min file", long_seconds, wall, rss))

    print(f"\nlincae CLI benchmark, {label}, {os.cpu_count()} CPUs, stereo 44.1 kHz\n")
    print("| run | audio (s) | wall (s) | x-realtime | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, audio_seconds, wall, rss in rows:
        speed = audio_seconds / wall
        print(f"| {name} | {audio_seconds:.0f} | {wall:.1f} | {speed:.2f} | {rss / 1e6:.0f} |")
    if not options.skip_per_file:
        verdict = "ok" if speedup >= 1.5 else "BELOW the 1.5x target"
        print(f"\nbatched encoding vs a process per file: {speedup:.2f}x faster ({verdict})")
    if not options.skip_long:
        verdict = "ok" if long_encode_rss < RSS_LIMIT_BYTES else "OVER the 2 GB limit"
        print(f"long-file encode peak RSS: {long_encode_rss / 1e9:.2f} GB ({verdict})")
    if options.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
