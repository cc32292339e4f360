"""Inference speed: ours vs linear-cae at the published size, same random weights, one process.

    python benchmarks/bench_inference.py --seconds 30 --rounds 2

Builds linear-cae's Autoencoder with random weights, converts it with our converter, then
alternates ours/theirs for encode and decode of the same audio, reporting median x-realtime and
the speed ratio ours/theirs for our default path (precision auto: bf16 autocast where the CPU
has native bf16, channels-last) and for our fp32 path. Decoded audio of our default
path is compared with the fp32 reference output for the same initial noise (SNR in dB).
Needs `pip install --no-deps linear-cae` (the test extra's set-up does this).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lincae_cli.engine.device import configure_threads, resolve_precision  # noqa: E402
from lincae_cli.eval.metrics import snr_db  # noqa: E402
from lincae_cli.hub.convert import convert_linear_cae  # noqa: E402
from lincae_cli.hub.store import load_model  # noqa: E402
from tests import reference  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args()
    configure_threads(args.threads or None)

    folder = Path(tempfile.mkdtemp(prefix="lincae-bench-"))
    ref, files = reference.build_linear_cae(
        folder / "weights", reference.PUBLISHED_GENERATOR, reference.PUBLISHED_FRONTEND, 33.0
    )
    converted = convert_linear_cae(files, folder / "ours.safetensors", "bench", 33.0)
    ours_fp32 = load_model(converted)
    default_precision = resolve_precision("auto", torch.device("cpu"))
    ours_fast = load_model(converted).optimize_for_inference(default_precision)
    hop = 512
    frames = int(args.seconds * 44100 / hop) // 8 * 8
    samples = (frames + 3) * hop
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(1, samples, generator=generator)
    seconds = samples / 44100

    times: dict[str, list[float]] = {}

    def record(name: str, fn):
        elapsed, out = timed(fn)
        times.setdefault(name, []).append(elapsed)
        return out

    with torch.inference_mode():
        z = ref.encode(audio)
        noise = torch.randn(1, 2, 1024, z.shape[-1] * 8, generator=generator) * 80.0
        for _ in range(args.rounds):
            record("encode theirs", lambda: ref.encode(audio))
            record("encode ours fp32", lambda: ours_fp32.encode(audio))
            record("encode ours default", lambda: ours_fast.encode(audio))
            y_ref = record(
                "decode theirs",
                lambda: ref.frontend.to_waveform(
                    ref.generator.forward_generator(z / 33.0, noise, 80.0)
                ),
            )
            y_fp32 = record("decode ours fp32", lambda: ours_fp32.decode(z, initial_noise=noise))
            y_fast = record("decode ours default", lambda: ours_fast.decode(z, initial_noise=noise))

    print(f"audio: {seconds:.1f} s, threads: {torch.get_num_threads()}, rounds: {args.rounds}")
    print(f"precision of our default path: {default_precision}, channels-last")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:22s} {value:8.2f} s   {seconds / value:6.2f}x realtime")
    for stage in ("encode", "decode"):
        for variant in ("default", "fp32"):
            ratio = medians[f"{stage} theirs"] / medians[f"{stage} ours {variant}"]
            print(f"{stage} speed ratio ours {variant}/theirs: {ratio:.2f}x")
    print(f"decoded SNR ours fp32 vs theirs: {float(snr_db(y_fp32, y_ref)):.1f} dB")
    print(f"decoded SNR ours default vs theirs fp32: {float(snr_db(y_fast, y_ref)):.1f} dB")


if __name__ == "__main__":
    main()
