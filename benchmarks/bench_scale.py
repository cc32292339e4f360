"""What encoding a catalogue costs per process, and how shares of a large one balance
(docs/scale.md).

    python benchmarks/bench_scale.py                            # the embedded default model
    python benchmarks/bench_scale.py --random-preset published  # random weights, paper size

Measures, on this machine: ``lincae encode DIR -o OUT --manifest`` in one process (x-realtime,
peak RSS), the same under ``torchrun`` with ``--ranks`` processes, what each file costs the
shares (header read) and the manifest (an fsynced line, the merge), a `LatentDataset` crop,
and the balance of `assign_shares` on a simulated catalogue of ``--catalogue-hours``.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from bench_cli import SAMPLE_RATE, choose_model, music_like, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="--model for lincae (default: the embedded model)")
    parser.add_argument("--random-preset", help="random weights of this preset")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ranks", type=int, default=2, help="torchrun processes (0: skip)")
    parser.add_argument("--extra", default="", help="more lincae options")
    parser.add_argument("--catalogue-hours", type=float, default=10_000.0)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lincae-scale-"))
    try:
        model_args, label = choose_model(options, work)
        common = [*model_args, "--quiet", *options.extra.split()]
        clips = write_clips(work / "clips", options.files, options.seconds)
        audio_seconds = options.files * options.seconds
        print(f"\n## {label}, {os.cpu_count()} CPUs, {options.files} x {options.seconds:g} s\n")
        print("| run | x-realtime (all processes) | peak RSS per process (MB) |")
        print("|---|---:|---:|")
        wall, rss = run(["encode", str(clips), "-o", str(work / "lat"), "--manifest", *common])
        print(f"| one process | {audio_seconds / wall:.2f} | {rss / 1e6:.0f} |")
        if options.ranks > 1:
            wall, rss = torchrun(options.ranks, clips, work / "lat-ranks", common)
            row = f"torchrun, {options.ranks} processes"
            print(f"| {row} | {audio_seconds / wall:.2f} | {rss / 1e6:.0f} |")
        per_file(work, clips)
        shares(options.catalogue_hours)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_clips(folder: Path, files: int, seconds: float) -> Path:
    folder.mkdir(parents=True)
    for index in range(files):
        soundfile.write(folder / f"clip{index:03d}.wav", music_like(seconds, index), SAMPLE_RATE)
    return folder


def torchrun(ranks: int, clips: Path, out: Path, common: list[str]) -> tuple[float, int]:
    """Wall time of a torchrun launch, and the largest peak RSS of its processes."""
    logs = out.parent / "logs"
    (out.parent / "lincae_with_rss.py").write_text(_WITH_RSS)
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        *("--nproc-per-node", str(ranks), "--log-dir", str(logs), "--redirects", "3"),
        *("-m", "lincae_with_rss", "encode", str(clips), "-o", str(out), "--manifest", *common),
    ]
    path = os.pathsep.join([str(out.parent), str(Path(__file__).resolve().parents[1])])
    env = {**os.environ, "PYTHONPATH": path}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - start
    peaks = [int(p.read_text().split()[-1]) for p in logs.rglob("stdout.log")]
    return wall, max(peaks)


_WITH_RSS = """
import resource, sys
from lincae_cli.cli.app import main
code = main(sys.argv[1:])
print("peak RSS bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
sys.exit(code)
"""


def per_file(work: Path, clips: Path) -> None:
    """Costs per file of the shares, the manifest and the dataset (microseconds)."""
    from lincae_cli.batch.catalogue import check_manifest, merge_manifest
    from lincae_cli.batch.durations import input_seconds
    from lincae_cli.batch.inputs import InputFile
    from lincae_cli.batch.manifest import PartWriter
    from lincae_cli.data import LatentDataset

    items = [InputFile(path) for path in sorted(clips.iterdir())] * 25
    start = time.perf_counter()
    input_seconds(items)
    header_us = (time.perf_counter() - start) / len(items) * 1e6
    lat_items = [InputFile(p) for p in sorted((work / "lat").glob("*.lat"))] * 25
    start = time.perf_counter()
    input_seconds(lat_items)
    lat_header_us = (time.perf_counter() - start) / len(lat_items) * 1e6

    merge_manifest(work / "lat")
    lat_count = len(list((work / "lat").glob("*.lat")))
    start = time.perf_counter()
    check_manifest(work / "lat")
    check_us = (time.perf_counter() - start) / lat_count * 1e6
    writer = PartWriter(work / "bench-manifest", "bench.0", 0)
    line = json.loads((work / "lat" / "manifest.jsonl").read_text().splitlines()[0])
    count = 2000
    start = time.perf_counter()
    for index in range(count):
        writer.append({**line, "output": f"x/{index:06d}.lat"})
    append_us = (time.perf_counter() - start) / count * 1e6
    writer.close()
    start = time.perf_counter()
    merge_manifest(work / "bench-manifest")
    merge_us = (time.perf_counter() - start) / count * 1e6

    dataset = LatentDataset(work / "lat", 64, seed=0)
    indices = np.random.default_rng(0).integers(0, len(dataset), 2000)
    start = time.perf_counter()
    for index in indices:
        dataset[int(index)]
    item_us = (time.perf_counter() - start) / len(indices) * 1e6
    from lincae_cli.audio.sources import open_audio_source

    reader_us = {}
    for rate in (SAMPLE_RATE, 48000):  # the model's rate, then a resampled read
        start = time.perf_counter()
        for path in sorted(clips.iterdir()):
            for _ in open_audio_source(str(path), None).model_rate_blocks(rate):
                pass
        reader_us[rate] = (time.perf_counter() - start) / len(list(clips.iterdir())) * 1e6
    print("\n| per file | microseconds |\n|---|---:|")
    print(f"| reader: read a clip and measure its loudness | {reader_us[SAMPLE_RATE]:.0f} |")
    print(f"| reader: the same, resampled 44.1 -> 48 kHz | {reader_us[48000]:.0f} |")
    print(f"| duration from an audio header (WAV) | {header_us:.0f} |")
    print(f"| duration from a .lat header | {lat_header_us:.0f} |")
    print(f"| manifest line (one write + fsync) | {append_us:.0f} |")
    print(f"| merging a line (lincae manifest) | {merge_us:.1f} |")
    print(f"| checking the .lat of a clip (lincae manifest --check) | {check_us:.0f} |")
    print(f"| LatentDataset item, 64-frame random crop, float16 | {item_us:.0f} |")


def shares(hours: float) -> None:
    """Balance of `assign_shares` on a catalogue of lognormal durations (median 3.5 min)."""
    from lincae_cli.engine.shard import assign_shares

    rng = np.random.default_rng(0)
    durations: list[float] = []
    while sum(durations) < hours * 3600:
        durations += list(np.clip(rng.lognormal(np.log(210), 0.6, 10_000), 5, 3600))
    print(f"\n{len(durations)} files, {sum(durations) / 3600:.0f} h\n")
    print("| ranks | max / mean rank load | assignment time (s) |\n|---:|---:|---:|")
    for ranks in (8, 64, 512):
        start = time.perf_counter()
        owners = assign_shares(durations, ranks)
        elapsed = time.perf_counter() - start
        loads = np.bincount(owners, weights=durations, minlength=ranks)
        print(f"| {ranks} | {loads.max() / loads.mean():.5f} | {elapsed:.2f} |")


if __name__ == "__main__":
    main()
