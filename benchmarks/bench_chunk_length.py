"""The chunk-length table: what `--chunk-seconds` costs and changes on long music.

Cuts a few held-out tracks (default: 3 tracks of ~/.cache/lincae/data/music/valid, 75 s from
30 s in, mono as they are) and, for each chunk length, encodes and decodes them with the
default model through the engine, as `lincae encode` / `decode` run them. Each chunk length
runs in a process of its own, so that its peak memory is its own. Reported per chunk length:

- latent difference: relative L2 of the latents against a single-window encode (one chunk
  longer than the tracks), per track, then averaged;
- decoded difference: the same for the decoded audio against the single-window decode;
- reconstruction MSS of the decoded audio (at the model's own level: no loudness restoration)
  against the original (lincae_cli/eval/metrics.py, a margin of n_fft samples left out at
  both ends, as `lincae eval` does);
- peak memory (resident set, VmHWM; on a CUDA GPU the GPU's allocations; reset before
  encoding and before decoding) and speed (seconds of audio per second, after a short
  warm-up) of encoding and of decoding.

The device is the engine's default (a GPU if there is one); `--precision` as in `lincae`.

    python benchmarks/bench_chunk_length.py [--chunks 5,10,20,30,60] [--tracks 3]
        [--seconds 75] [--precision auto] [--data ~/.cache/lincae/data/music/valid]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = "~/.cache/lincae/data/music/valid"


def _peak_reset(device: torch.device) -> None:
    """Reset the peak memory, so that the next peak is a stage's: on a CUDA GPU the GPU's
    allocations, otherwise this process's resident set (Linux: VmHWM)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """Encode and decode the tracks at one chunk length; save the results, print the costs."""
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.audio.sources import ArraySource
    from lincae_cli.engine.inference import Engine, EngineOptions

    folder = Path(args.work)
    tracks = dict(np.load(folder / "tracks.npz"))
    options = EngineOptions(precision=args.precision, chunk_seconds=args.child)
    engine = Engine.load(None, options)
    rate = engine.config.sample_rate
    # Warm-up (libraries, first kernels) on 3 s of the first track.
    piece = next(iter(tracks.values()))[:, : 3 * rate]
    (warm,) = engine.run([engine.encode_job(ArraySource("warm-up", piece, rate))])
    list(engine.run([engine.decode_job(warm.result, None)]))

    _peak_reset(engine.device)
    start = time.perf_counter()
    jobs = [engine.encode_job(ArraySource(name, audio, rate)) for name, audio in tracks.items()]
    lats = {outcome.job.name: outcome.result for outcome in engine.run(jobs)}
    encode_seconds, encode_peak = time.perf_counter() - start, _peak_mib(engine.device)

    _peak_reset(engine.device)
    start = time.perf_counter()
    decoded = {}
    if not args.encode_only:
        level = OutputOptions(restore_loudness=False)  # the model's own level, for every row
        jobs = [engine.decode_job(lat, None, level, name) for name, lat in lats.items()]
        decoded = {outcome.job.name: outcome.result.audio for outcome in engine.run(jobs)}
    decode_seconds, decode_peak = time.perf_counter() - start, _peak_mib(engine.device)

    tag = f"{args.child}-{args.precision}"
    np.savez(folder / f"latents-{tag}.npz", **{n: lat.latents for n, lat in lats.items()})
    np.savez(folder / f"decoded-{tag}.npz", **decoded)
    audio_seconds = sum(audio.shape[-1] for audio in tracks.values()) / rate
    report = {
        "chunk_seconds": args.child,
        "chunk_frames": engine.spec.chunk_frames,
        "precision": engine.model.precision_name,
        "model": engine.model_name,
        "device": str(engine.device),
        "batch_size": engine.batch_size,
        "encode_realtime": audio_seconds / encode_seconds,
        "decode_realtime": audio_seconds / decode_seconds,
        "encode_peak_mib": encode_peak,
        "decode_peak_mib": decode_peak,
        "n_fft": engine.config.n_fft,
    }
    print(json.dumps(report))


def _load_tracks(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """``args.seconds`` from ``args.start`` of the first ``args.tracks`` tracks (by name),
    float32 ``[channels, samples]`` at 44.1 kHz (the default model's rate)."""
    import soundfile

    files = sorted(Path(os.path.expanduser(args.data)).glob("*.flac"))[: args.tracks]
    if len(files) < args.tracks:
        raise SystemExit(f"{args.data}: fewer than {args.tracks} .flac tracks")
    tracks = {}
    for path in files:
        rate = soundfile.info(str(path)).samplerate
        if rate != 44100:
            raise SystemExit(f"{path}: {rate} Hz; this benchmark expects 44.1-kHz tracks")
        count = int(args.seconds * rate)
        audio, _ = soundfile.read(
            str(path), start=int(args.start * rate), frames=count, dtype="float32", always_2d=True
        )
        if audio.shape[0] < count:
            raise SystemExit(f"{path}: shorter than {args.start + args.seconds} s")
        tracks[path.stem] = np.ascontiguousarray(audio.T)
    return tracks


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="5,10,20,30,60", help="chunk lengths, seconds")
    parser.add_argument("--tracks", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=75.0, help="length cut from each track")
    parser.add_argument("--start", type=float, default=30.0, help="where the cut starts, s")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--encode-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return

    from lincae_cli.eval.metrics import aligned_mss

    began = time.perf_counter()
    tracks = _load_tracks(args)
    single = args.seconds + 10.0  # one chunk longer than every track: a single window
    chunks = [float(c) for c in args.chunks.split(",")] + [single]
    with tempfile.TemporaryDirectory() as work:
        np.savez(Path(work) / "tracks.npz", **tracks)

        def run(chunk: float, precision: str, *extra: str) -> tuple[dict, dict, dict]:
            command = [sys.executable, __file__, "--child", str(chunk), "--work", work]
            done = subprocess.run(
                [*command, "--precision", precision, *extra],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                raise SystemExit(done.stderr)
            tag = Path(work) / f"{{}}-{chunk}-{precision}.npz"
            return (
                json.loads(done.stdout.strip().splitlines()[-1]),
                dict(np.load(str(tag).format("latents"))),
                dict(np.load(str(tag).format("decoded"))),
            )

        runs = [run(chunk, args.precision) for chunk in chunks]
        # The arithmetic's share of the differences: this precision against fp32, one window.
        fp32 = run(single, "fp32", "--encode-only") if runs[0][0]["precision"] != "fp32" else None
    reports = [report for report, _, _ in runs]
    results = {
        chunk: (latents, decoded) for chunk, (_, latents, decoded) in zip(chunks, runs, strict=True)
    }
    ref_latents, ref_decoded = results[single]
    margin = reports[0]["n_fft"]
    first = reports[0]
    print(
        f"model {first['model']}, device {first['device']}, precision {first['precision']}, "
        f"batch {first['batch_size']}, {len(tracks)} tracks x {args.seconds:g} s (from "
        f"{args.start:g} s), CPU threads {torch.get_num_threads()}; peak memory: "
        f"{'GPU allocations' if first['device'].startswith('cuda') else 'resident set'}"
    )
    print(
        "| chunk (s) | frames | latent diff vs single window | decoded diff | recon MSS "
        "| encode x realtime | encode peak MiB | decode x realtime | decode peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for chunk, report in zip(chunks, reports, strict=True):
        latents, decoded = results[chunk]
        latent_diff = np.mean([_relative_l2(latents[n], ref_latents[n]) for n in tracks])
        decoded_diff = np.mean([_relative_l2(decoded[n], ref_decoded[n]) for n in tracks])
        mss = np.mean(
            [
                float(
                    aligned_mss(
                        torch.from_numpy(decoded[n]), torch.from_numpy(tracks[n]), margin
                    ).mean()
                )
                for n in tracks
            ]
        )
        label = f"{chunk:g}" if chunk != single else f"{chunk:g} (single window)"
        print(
            f"| {label} | {report['chunk_frames']} | {latent_diff:.4f} | {decoded_diff:.4f} "
            f"| {mss:.4f} | {report['encode_realtime']:.1f} | {report['encode_peak_mib']:.0f} "
            f"| {report['decode_realtime']:.2f} | {report['decode_peak_mib']:.0f} |"
        )
    if fp32 is not None:
        floor = np.mean([_relative_l2(ref_latents[n], fp32[1][n]) for n in tracks])
        print(f"latent difference of {first['precision']} vs fp32, both single window: {floor:.4f}")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
