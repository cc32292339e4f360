"""The published size through the command line against bare linear-cae calls (issue 15).

    python benchmarks/bench_published_cli.py                  # 30 s encode, 10 s decode
    python benchmarks/bench_published_cli.py --rounds 3

Builds linear-cae's Autoencoder at the published size with random weights, converts it to a
lincae model file, and alternates, on the same stereo audio:

- ``lincae encode SONG --model FILE`` of ``--encode-seconds`` (a whole process at default
  settings: start-up, model loading, reading, chunking, writing) against linear-cae's
  ``Autoencoder.encode(audio)`` in this warm process (the call alone);
- ``lincae decode`` of the ``.lat`` of ``--decode-seconds`` against ``Autoencoder.decode(z)``
  of linear-cae's latents of the same audio.

Reports median seconds, theirs / ours (target >= 2 on every CPU), our processes' peak RSS (the
largest of the rounds; target <= 2 GB), and the SNR of our default decoding against ``lincae
decode --precision fp32`` (target >= 30 dB). Needs ``pip install --no-deps linear-cae``.

An AVX2-only CPU is emulated on a newer one by capping both sides' instruction sets:

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_published_cli.py

(oneDNN's convolutions and ATen's vectorised kernels then use AVX2 at most, and our automatic
precision is fp32, as on such a CPU; engine/device.py reads the same cap.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_cli import SAMPLE_RATE, cpu_kind, music_like, run  # noqa: E402
from lincae_cli.engine.device import configure_threads, resolve_precision  # noqa: E402
from lincae_cli.eval.metrics import snr_db  # noqa: E402
from lincae_cli.hub.convert import convert_linear_cae  # noqa: E402
from lincae_cli.latents.latfile import read_lat  # noqa: E402
from tests import reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encode-seconds", type=float, default=30.0)
    parser.add_argument("--decode-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--keep-freed-memory",
        choices=("default", "1", "0"),
        default="default",
        help="LINCAE_KEEP_FREED_MEMORY for our processes (engine/allocator.py)",
    )
    args = parser.parse_args()
    if args.keep_freed_memory != "default":
        os.environ["LINCAE_KEEP_FREED_MEMORY"] = args.keep_freed_memory
    threads = configure_threads(None)

    folder = Path(tempfile.mkdtemp(prefix="lincae-published-"))
    theirs, files = reference.build_linear_cae(
        folder / "weights", reference.PUBLISHED_GENERATOR, reference.PUBLISHED_FRONTEND, 33.0
    )
    model = str(convert_linear_cae(files, folder / "published.safetensors", "published", 33.0))
    songs = {}
    for name, seconds in (("enc", args.encode_seconds), ("dec", args.decode_seconds)):
        songs[name] = folder / f"{name}.wav"
        soundfile.write(songs[name], music_like(seconds, seed=3), SAMPLE_RATE, subtype="FLOAT")
    audio = {
        name: torch.from_numpy(soundfile.read(path, dtype="float32")[0].T.copy())
        for name, path in songs.items()
    }
    lat, out, exact = folder / "dec.lat", folder / "dec.wav", folder / "dec-fp32.wav"
    run(["encode", str(songs["dec"]), "-o", str(lat), "--model", model, "-q"])

    def call(fn) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            fn()
        return time.perf_counter() - start

    with torch.inference_mode():
        z_theirs = theirs.encode(audio["dec"])
    times: dict[str, list[float]] = {}
    peaks: dict[str, int] = {}  # the largest of the rounds
    for _ in range(args.rounds):
        wall, peak = run(
            [
                "encode",
                str(songs["enc"]),
                "-o",
                str(folder / "enc.lat"),
                "--model",
                model,
                "-f",
                "-q",
            ]
        )
        peaks["encode"] = max(peaks.get("encode", 0), peak)
        times.setdefault("encode ours", []).append(wall)
        times.setdefault("encode theirs", []).append(call(lambda: theirs.encode(audio["enc"])))
        wall, peak = run(
            [
                "decode",
                str(lat),
                "-o",
                str(out),
                "--model",
                model,
                "-f",
                "-q",
                "--no-restore-loudness",
            ]
        )
        peaks["decode"] = max(peaks.get("decode", 0), peak)
        times.setdefault("decode ours", []).append(wall)
        times.setdefault("decode theirs", []).append(call(lambda: theirs.decode(z_theirs)))
    run(
        [
            "decode",
            str(lat),
            "-o",
            str(exact),
            "--model",
            model,
            "-f",
            "-q",
            "--precision",
            "fp32",
            "--no-restore-loudness",
            # The chunking of the default run (which the .lat records from its encoding): on a
            # CPU the default chunk can depend on the precision (engine/device.py).
            "--chunk-seconds",
            str(read_lat(lat).meta.chunking["chunk_seconds"]),
        ]
    )
    decoded, reference_audio = (
        torch.from_numpy(soundfile.read(path, dtype="float32")[0]).reshape(1, -1)
        for path in (out, exact)
    )
    snr = float(snr_db(decoded, reference_audio))  # over both channels together

    median = {name: statistics.median(values) for name, values in times.items()}
    precision = resolve_precision("auto", torch.device("cpu"), inference=True)
    print(
        f"published size (random weights), stereo, {threads} threads, our auto precision "
        f"{precision}, median of {args.rounds}, LINCAE_KEEP_FREED_MEMORY {args.keep_freed_memory}"
    )
    print(f"CPU: {cpu_kind()}")
    print(
        f"{'':8} {'seconds':>8} {'ours (s)':>9} {'theirs (s)':>11} {'theirs/ours':>12} "
        f"{'our peak RSS':>13}"
    )
    for stage, seconds in (("encode", args.encode_seconds), ("decode", args.decode_seconds)):
        ours, bare = median[f"{stage} ours"], median[f"{stage} theirs"]
        print(
            f"{stage:8} {seconds:8.0f} {ours:9.2f} {bare:11.2f} {bare / ours:12.2f} "
            f"{peaks[stage] / 2**20:9.0f} MiB"
        )
    print(f"decoded SNR, our default vs --precision fp32: {snr:.1f} dB")
    for name, values in times.items():
        print(f"{name}: {', '.join(f'{value:.2f}' for value in values)} s")


if __name__ == "__main__":
    main()
