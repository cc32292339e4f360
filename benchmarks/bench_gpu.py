"""GPU speed and memory of the engine, and its output against the CPU fp32 path.

    python benchmarks/bench_gpu.py                  # a CUDA GPU: under a minute on an H200
    python benchmarks/bench_gpu.py --json gpu.json  # the figures as JSON records too
    python benchmarks/bench_gpu.py --cpu-memory     # no GPU needed: the per-window memory constant

For the embedded model (lincae-small) and the published size (random weights in the published
layout, `ModelConfig()`: 58 M parameters), encodes and decodes ``--seconds`` of stereo audio
through `Engine` (reader threads, pinned host buffers, padded batches, overlap-add: the CLI's
path without the file I/O) at each of ``--batch-sizes``, after one untimed warm-up run, and
prints x realtime (seconds of audio per second of wall time), the peak GPU memory above the
weights and its share per window next to the estimate `engine/device.py` sizes batches with,
and the batch size the engine picks by itself. Then, for the embedded model, encodes 8 files
of 48 kHz audio from disk with one reader thread and with the engine's readers (resampling
on the way). Last, a short clip through the default GPU path (precision auto), fp16 (what
auto means on a GPU without bf16) and fp32 on the GPU, against the CPU fp32 path: SNR in dB
of the latents and of the decoded audio (decoding the CPU's latents, same seed; nan where a
path gave NaNs). Stops measuring when ``--budget`` seconds
have passed. Without a CUDA GPU it says so in one line and exits 0.

``--cpu-memory`` measures on the CPU, each case in a fresh process, the peak RSS a window
adds (fp32, batch 1 and 2, encode and decode, small and published sizes) and prints it per
element of the generator's feature maps: the constant `PEAK_BYTES_PER_FEATURE_ELEMENT` of
engine/device.py.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lincae_cli.audio.sources import ArraySource, open_audio_source  # noqa: E402
from lincae_cli.engine.device import (  # noqa: E402
    configure_threads,
    feature_elements_per_frame,
    resolve_precision,
    window_bytes,
)
from lincae_cli.engine.inference import Engine, EngineOptions  # noqa: E402
from lincae_cli.eval.metrics import snr_db  # noqa: E402
from lincae_cli.hub.download import resolve_model_file  # noqa: E402
from lincae_cli.hub.store import load_model  # noqa: E402
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder  # noqa: E402
from lincae_cli.nn.config import PUBLISHED, preset  # noqa: E402

RATE = 44100
MIB = 2**20
MODELS = ("embedded", "published")


def music_like(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Stereo float32 ``[2, samples]``: detuned partials and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    rows = [
        sum(0.1 / k * np.sin(2 * np.pi * 110 * (1 + 0.01 * c) * k * t) for k in range(1, 6))
        + 0.01 * rng.standard_normal(t.size)
        for c in range(2)
    ]
    return np.stack(rows).astype(np.float32)


def random_model(config: Any, seed: int = 0) -> ConsistencyAutoencoder:
    """Random weights in ``config``'s layout; layers initialised to zero get small values too,
    so that decoding depends on the latents. Named, hashed and with a silence latent, so that
    an `Engine` takes it without hashing 58 M weights."""
    torch.manual_seed(seed)
    model = ConsistencyAutoencoder(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.abs().max() > 0:
                parameter.normal_(0.0, 0.02)
    model.name, model.weights_sha256 = "bench-random", f"{seed:064x}"  # type: ignore[assignment]
    model.silence_latent_values = [0.0] * config.latent_channels
    return model.eval()


def cpu_model(kind: str) -> ConsistencyAutoencoder:
    if kind == "embedded":
        return load_model(resolve_model_file("lincae-small"))
    return random_model(PUBLISHED)


def on(model: ConsistencyAutoencoder, device: str, precision: str) -> ConsistencyAutoencoder:
    """A copy of ``model`` on ``device``, ready for inference at ``precision`` (auto allowed)."""
    moved = copy.deepcopy(model).to(device)
    return moved.optimize_for_inference(resolve_precision(precision, moved.device, inference=True))


def run(engine: Engine, jobs: list[Any]) -> tuple[float, list[Any]]:
    """Seconds of wall time of ``jobs`` through ``engine``, and their results."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    outcomes = list(engine.run(jobs))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return elapsed, [outcome.result for outcome in outcomes]


def warm_and_time(engine: Engine, make_job: Any) -> tuple[Any, float, int]:
    """A warm-up run (cuDNN's choices, the caching allocator), then a timed one: its result,
    seconds and peak GPU memory in bytes (all of it, weights included)."""
    run(engine, [make_job()])
    torch.cuda.reset_peak_memory_stats()
    elapsed, (result,) = run(engine, [make_job()])
    return result, elapsed, torch.cuda.max_memory_allocated()


def measure_speed(kind: str, model: ConsistencyAutoencoder, args: Any, emit: Any) -> None:
    audio = music_like(args.seconds)
    seconds = audio.shape[-1] / RATE
    weights = torch.cuda.memory_allocated()
    emit(kind, "auto batch size", batch_size=Engine(model).batch_size)
    for batch_size in args.batch_sizes:
        if time.monotonic() > args.deadline:
            emit(kind, "skipped: --budget spent", batch_size=batch_size)
            return
        engine = Engine(model, EngineOptions(batch_size=batch_size))
        estimate = window_bytes(model.config, engine.spec.window_frames)
        source = ArraySource("bench", audio, RATE)
        lat, *encoded = warm_and_time(engine, functools.partial(engine.encode_job, source))
        _, *decoded = warm_and_time(engine, functools.partial(engine.decode_job, lat, None))
        for step, (elapsed, peak) in (("encode", encoded), ("decode", decoded)):
            emit(
                kind,
                step,
                batch_size=batch_size,
                x_realtime=round(seconds / elapsed, 2),
                peak_mib=round((peak - weights) / MIB),
                peak_mib_per_window=round((peak - weights) / batch_size / MIB),
                estimate_mib_per_window=round(estimate / MIB),
            )


def measure_readers(model: ConsistencyAutoencoder, args: Any, emit: Any) -> None:
    """8 files of 48 kHz stereo from disk: one reader thread against the engine's readers."""
    if time.monotonic() > args.deadline:
        emit("embedded", "readers skipped: --budget spent")
        return
    with tempfile.TemporaryDirectory(prefix="lincae-bench-gpu-") as folder:
        paths = []
        for index in range(8):
            path = Path(folder) / f"{index}.wav"
            soundfile.write(path, music_like(args.seconds / 4, 48000, index).T, 48000)
            paths.append(path)
        seconds = sum(soundfile.info(path).duration for path in paths)
        engine = Engine(model, EngineOptions(batch_size=max(args.batch_sizes)))
        pool, times = engine.readers, {}
        for readers in (pool, 1, pool):  # the first run is a warm-up
            engine.readers = readers
            jobs = [engine.encode_job(open_audio_source(path)) for path in paths]
            times[readers] = run(engine, jobs)[0]
        for readers in sorted(times):
            x_realtime = round(seconds / times[readers], 2)
            emit("embedded", "encode 8 files at 48 kHz", readers=readers, x_realtime=x_realtime)


def measure_snr(kind: str, reference: ConsistencyAutoencoder, args: Any, emit: Any) -> None:
    """A short clip: the default GPU path, fp16 and fp32 on the GPU against the CPU fp32
    path."""
    if time.monotonic() > args.deadline:
        emit(kind, "snr skipped: --budget spent")
        return
    clip = music_like(args.snr_seconds, seed=1)[:1]
    cpu = Engine(on(reference, "cpu", "fp32"))
    (cpu_lat,) = run(cpu, [cpu.encode_job(ArraySource("clip", clip, RATE))])[1]
    (cpu_audio,) = run(cpu, [cpu.decode_job(cpu_lat, None)])[1]
    for precision in ("auto", "fp16", "fp32"):  # fp16: what auto means before Ampere
        engine = Engine(on(reference, "cuda", precision))
        (lat,) = run(engine, [engine.encode_job(ArraySource("clip", clip, RATE))])[1]
        (audio,) = run(engine, [engine.decode_job(cpu_lat, None)])[1]
        emit(
            kind,
            "snr vs cpu fp32",
            precision=engine.framing.precision,
            latents_db=snr(lat.latents, cpu_lat.latents),
            audio_db=snr(audio.audio, cpu_audio.audio),
        )


def snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SNR in dB of the whole arrays, rounded."""
    flat = [torch.from_numpy(np.ascontiguousarray(a)).reshape(1, -1) for a in (estimate, reference)]
    return round(float(snr_db(*flat)[0]), 1)


def gpu_main(args: Any) -> int:
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    records: list[dict[str, Any]] = []

    def emit(model: str, what: str, **figures: Any) -> None:
        records.append({"model": model, "what": what, **figures})
        shown = ", ".join(f"{key} {value}" for key, value in figures.items())
        print(f"{model:9} {what}{': ' if shown else ''}{shown}", flush=True)

    print(
        f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"precision auto = {resolve_precision('auto', device, inference=True)}, "
        f"{configure_threads(None)} CPU threads",
        flush=True,
    )
    for kind in args.models:
        if time.monotonic() > args.deadline:
            emit(kind, "skipped: --budget spent")
            continue
        reference = cpu_model(kind)
        model = on(reference, "cuda", "auto")
        measure_speed(kind, model, args, emit)
        if kind == "embedded":
            measure_readers(model, args, emit)
        del model
        torch.cuda.empty_cache()
        measure_snr(kind, reference, args, emit)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "records": records}, indent=1))
    return 0


# -- the per-window memory constant, on the CPU ----------------------------------------------


def _peak_rss_of_window(config_name: str, step: str, batch: int, frames: int) -> int:
    """Bytes of RSS that one pass of ``batch`` windows of ``frames`` latent frames adds at its
    peak (fp32, channels-last, after a warm-up pass); Linux only (/proc)."""
    config = PUBLISHED if config_name == "published" else preset(config_name)
    model = random_model(config).optimize_for_inference("fp32")
    generator = torch.Generator().manual_seed(0)
    overhang = config.n_fft - config.hop
    audio = 0.1 * torch.randn(
        batch, frames * config.latent_hop_samples + overhang, generator=generator
    )
    latents = torch.randn(batch, config.latent_channels, frames, generator=generator)
    noise = 80.0 * torch.randn(batch, 2, config.freq_bins, frames * config.frames_per_latent)

    def forward() -> None:
        with torch.inference_mode():
            if step == "encode":
                model.encode(audio)
            else:
                model.decode(latents, initial_noise=noise)

    forward()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM)
    before = _status_bytes("VmRSS")
    forward()
    return _status_bytes("VmHWM") - before


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def cpu_memory_main(args: Any) -> int:
    frames = args.window_frames
    print(f"peak RSS per window of {frames} latent frames, fp32, {torch.get_num_threads()} threads")
    constants = []
    for config_name in ("small", "published"):
        config = PUBLISHED if config_name == "published" else preset(config_name)
        elements = feature_elements_per_frame(config) * frames * config.frames_per_latent
        for step in ("encode", "decode"):
            peaks = {}
            for batch in (1, 2):
                command = [sys.executable, __file__, "--rss-of", config_name, step, str(batch)]
                command += ["--window-frames", str(frames)]
                peaks[batch] = int(subprocess.check_output(command, text=True).split()[-1])
            per_window = max(peaks[1], peaks[2] - peaks[1])
            constants.append(per_window / elements)
            print(
                f"{config_name:9} {step}: batch 1 {peaks[1] / MIB:.0f} MiB, batch 2 "
                f"{peaks[2] / MIB:.0f} MiB: {per_window / MIB:.0f} MiB per window, "
                f"{per_window / elements:.1f} bytes per feature element",
                flush=True,
            )
    print(f"largest: {max(constants):.1f} bytes per feature element")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="stereo audio per run")
    parser.add_argument("--snr-seconds", type=float, default=5.0, help="clip for the SNR")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of measuring")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--cpu-memory", action="store_true", help="measure on the CPU instead")
    parser.add_argument("--window-frames", type=int, default=64, help="for --cpu-memory")
    parser.add_argument("--rss-of", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.deadline = time.monotonic() + args.budget
    if args.rss_of:
        config_name, step, batch = args.rss_of
        print(_peak_rss_of_window(config_name, step, int(batch), args.window_frames))
        return 0
    if args.cpu_memory:
        return cpu_memory_main(args)
    if not torch.cuda.is_available():
        print(f"bench_gpu.py: no CUDA GPU visible to torch {torch.__version__}; nothing measured")
        return 0
    return gpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
