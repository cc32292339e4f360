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


# Runs `lincae ARGS` from a small process and prints its wall time and peak RSS: a child forked
# straight from a large benchmark process would report that process's peak RSS as its own
# (Linux keeps the high-water mark across exec).
LAUNCH = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run([sys.executable, "-m", "lincae_cli.cli.app", *sys.argv[1:]],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
if done.returncode:
    sys.exit(done.stderr.decode())
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def run(args: list[str]) -> tuple[float, int]:
    """Run ``lincae ARGS`` in a new process: (wall seconds, peak RSS bytes of that process)."""
    done = subprocess.run([sys.executable, "-c", LAUNCH, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"lincae {' '.join(args)} failed:\n{done.stderr}")
    wall, peak = done.stdout.split()
    return float(wall), int(peak)


def cpu_kind() -> str:
    """The CPU as the figures should name it: model, whether it has AVX-512 BF16, and the
    instruction sets torch uses here (capped by ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA)."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line]
    bf16 = "with" if "avx512_bf16" in info or "amx_bf16" in info else "without"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    capped = f", oneDNN capped to {cap}" if cap else ""
    return (
        f"{names[0] if names else 'unknown'} ({bf16} AVX-512 BF16), {os.cpu_count()} cores, "
        f"ATen {torch.backends.cpu.get_cpu_capability()}{capped}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="--model for lincae (default: the embedded model)")
    parser.add_argument(
        "--random-preset", help="save a random-weight model of this preset and use it"
    )
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--skip-batch", action="store_true", help="only the long file")
    parser.add_argument("--skip-per-file", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-long-decode", action="store_true")
    parser.add_argument("--extra", default="", help="more lincae options, e.g. '--batch-size 2'")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp folder)")
    options = parser.parse_args()

    work = options.workdir or Path(tempfile.mkdtemp(prefix="lincae-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_args, label = choose_model(options, work)
    common = [*model_args, "--quiet", *options.extra.split()]
    rows: list[tuple[str, float, float, int]] = []
    notes = []
    if not options.skip_batch:
        notes += bench_batch(options, work, common, rows)
    if not options.skip_long:
        notes += bench_long(options, work, common, rows)

    print(f"\nlincae CLI benchmark, {label}, {os.cpu_count()} CPUs, stereo 44.1 kHz\n")
    print("| run | audio (s) | wall (s) | x-realtime | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, audio_seconds, wall, rss in rows:
        speed = audio_seconds / wall
        print(f"| {name} | {audio_seconds:.0f} | {wall:.1f} | {speed:.2f} | {rss / 1e6:.0f} |")
    print("", *notes, sep="\n")
    if options.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def choose_model(options: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    if options.random_preset:
        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from lincae_cli.hub.store import save_model
        from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
        from lincae_cli.nn.config import preset

        torch.manual_seed(0)
        path = work / f"random-{options.random_preset}.safetensors"
        save_model(
            ConsistencyAutoencoder(preset(options.random_preset)),
            path,
            name=f"random-{options.random_preset}",
        )
        return ["--model", str(path)], f"random-weight '{options.random_preset}' preset"
    if options.model:
        return ["--model", options.model], options.model
    return [], "embedded default model"


def bench_batch(
    options: argparse.Namespace, work: Path, common: list[str], rows: list
) -> list[str]:
    """Many clips: one process for all, then one process per clip."""
    clips = work / "clips"
    clips.mkdir(exist_ok=True)
    for index in range(options.files):
        audio = music_like(options.seconds, index)
        soundfile.write(clips / f"clip{index:02d}.wav", audio, SAMPLE_RATE)
    for folder in ("lat", "wav", "lat-single"):
        shutil.rmtree(work / folder, ignore_errors=True)
    audio_seconds = options.files * options.seconds
    what = f"{options.files} x {options.seconds:g} s"

    batch_wall, rss = run(["encode", str(clips), "-o", str(work / "lat"), *common])
    rows.append((f"encode {what}, one process", audio_seconds, batch_wall, rss))
    wall, rss = run(["decode", str(work / "lat"), "-o", str(work / "wav"), *common])
    rows.append((f"decode {what}, one process", audio_seconds, wall, rss))
    if options.skip_per_file:
        return []
    total, peak = 0.0, 0
    (work / "lat-single").mkdir()
    for clip in sorted(clips.iterdir()):
        target = work / "lat-single" / f"{clip.stem}.lat"
        wall, rss = run(["encode", str(clip), "-o", str(target), *common])
        total, peak = total + wall, max(peak, rss)
    rows.append((f"encode {what}, a process per file", audio_seconds, total, peak))
    speedup = total / batch_wall
    verdict = "ok" if speedup >= 1.5 else "BELOW the 1.5x target"
    return [f"batched encoding vs a process per file: {speedup:.2f}x faster ({verdict})"]


def bench_long(options: argparse.Namespace, work: Path, common: list[str], rows: list) -> list[str]:
    """One long file through encode (and decode)."""
    long_file = work / f"long-{options.long_minutes:g}min.wav"
    if not long_file.exists():
        write_long(long_file, options.long_minutes)
    audio_seconds = options.long_minutes * 60
    what = f"one {options.long_minutes:g} min file"
    encoded, decoded = work / "long.lat", work / "long-decoded.wav"
    encoded.unlink(missing_ok=True)
    decoded.unlink(missing_ok=True)
    wall, encode_rss = run(["encode", str(long_file), "-o", str(encoded), *common])
    rows.append((f"encode {what}", audio_seconds, wall, encode_rss))
    if not options.skip_long_decode:
        wall, rss = run(["decode", str(encoded), "-o", str(decoded), *common])
        rows.append((f"decode {what}", audio_seconds, wall, rss))
    verdict = "ok" if encode_rss < RSS_LIMIT_BYTES else "OVER the 2 GB limit"
    return [f"long-file encode peak RSS: {encode_rss / 1e9:.2f} GB ({verdict})"]


if __name__ == "__main__":
    main()
