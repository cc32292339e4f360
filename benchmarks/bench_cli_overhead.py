"""What the command line adds to the model: `lincae encode` / `lincae decode` of a long stereo
file as whole processes, against the bare model's forward passes over the same audio.

    python benchmarks/bench_cli_overhead.py                 # 5-minute stereo, embedded model
    python benchmarks/bench_cli_overhead.py --minutes 2 --rounds 3

The baseline is what the CLI cannot avoid: the model's encode (decode) calls over the audio
cut into windows of the CLI's chunk length, no context margins, no reading or writing, in a
warm process with the model loaded, each channel on its own (as the CLI runs them), at the
precision and thread count the CLI picks and with the allocator settings its engine makes
(engine/allocator.py; the same loop once before them, with glibc's defaults, is shown too).
The CLI runs with its defaults (a fresh process:
start-up, model loading, reading, margins, STFT, loudness, writing). Rounds alternate the two
so that they share the machine's noise; reported: median seconds and CLI / bare (target
<= 1.2, issue 15).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_cli import SAMPLE_RATE, run, write_long  # noqa: E402
from lincae_cli.engine.allocator import keep_freed_memory  # noqa: E402
from lincae_cli.engine.chunks import DEFAULT_CHUNK_SECONDS, chunk_frames_for_seconds  # noqa: E402
from lincae_cli.engine.device import configure_threads, resolve_precision  # noqa: E402
from lincae_cli.hub.download import resolve_model_file  # noqa: E402
from lincae_cli.hub.registry import default_model  # noqa: E402
from lincae_cli.hub.store import load_model  # noqa: E402


def cli(args: list[str]) -> float:
    return run(args)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--skip-decode", action="store_true", help="encode only")
    args = parser.parse_args()

    spec = args.model or default_model()[0]
    model_path = resolve_model_file(spec)
    threads = configure_threads(None)
    model = load_model(model_path)
    precision = resolve_precision("auto", torch.device("cpu"), inference=True)
    model.optimize_for_inference(precision)
    config = model.config
    latent_hop = config.hop * config.frames_per_latent
    chunk_frames = chunk_frames_for_seconds(DEFAULT_CHUNK_SECONDS, config.sample_rate, latent_hop)
    piece = chunk_frames * latent_hop

    folder = Path(tempfile.mkdtemp(prefix="lincae-overhead-"))
    song, lat, out = folder / "song.wav", folder / "song.lat", folder / "out.wav"
    write_long(song, args.minutes)
    audio = torch.from_numpy(soundfile.read(song, dtype="float32")[0].T.copy())
    assert config.sample_rate == SAMPLE_RATE
    pieces = [audio[:, start : start + piece] for start in range(0, audio.shape[1], piece)]

    def bare_encode() -> tuple[float, list[torch.Tensor]]:
        start, latents = time.perf_counter(), []
        with torch.inference_mode():
            for chunk in pieces:
                latents.append(torch.cat([model.encode(channel[None]) for channel in chunk]))
        return time.perf_counter() - start, latents

    def bare_decode(latents: list[torch.Tensor]) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for chunk in latents:
                for channel in chunk:
                    model.decode(channel[None])
        return time.perf_counter() - start

    _, warm = bare_encode()  # warm-up: kernels
    bare_decode(warm[:1])
    # Once with glibc's default malloc (what a plain script gets), then with the settings the
    # CLI's engine makes (engine/allocator.py), for every round.
    plain_encode, latents = bare_encode()
    plain_decode = 0.0 if args.skip_decode else bare_decode(latents)
    tuned = keep_freed_memory()
    times: dict[str, list[float]] = {
        key: [] for key in ("cli_enc", "bare_enc", "cli_dec", "bare_dec")
    }
    model_arg = ["--model", str(spec)]
    for _ in range(args.rounds):
        times["cli_enc"].append(cli(["encode", str(song), "-o", str(lat), "-f", "-q", *model_arg]))
        seconds, latents = bare_encode()
        times["bare_enc"].append(seconds)
        if not args.skip_decode:
            times["cli_dec"].append(cli(["decode", str(lat), "-o", str(out), "-f", "-q"]))
            times["bare_dec"].append(bare_decode(latents))

    median = {key: statistics.median(values) for key, values in times.items() if values}
    duration = audio.shape[1] / SAMPLE_RATE
    print(
        f"{spec}, {duration / 60:.1f} min stereo, {len(pieces)} windows of {chunk_frames} frames "
        f"per channel, precision {precision}, {threads} threads, median of {args.rounds}"
    )
    print(
        f"bare: with the engine's allocator settings ({'taken' if tuned else 'not glibc'}); "
        "bare, plain malloc: once, before them"
    )
    print(
        f"{'':8} {'CLI (s)':>8} {'bare (s)':>9} {'CLI/bare':>9} {'CLI x realtime':>15} "
        f"{'bare, plain malloc (s)':>23}"
    )
    stages = (("encode", "enc", plain_encode), ("decode", "dec", plain_decode))
    for name, key, plain in stages[: 1 if args.skip_decode else 2]:
        ours, bare = median[f"cli_{key}"], median[f"bare_{key}"]
        print(
            f"{name:8} {ours:8.2f} {bare:9.2f} {ours / bare:9.2f} {duration / ours:15.1f} "
            f"{plain:23.2f}"
        )


if __name__ == "__main__":
    main()
