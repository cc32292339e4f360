"""Eager PyTorch against torch.compile, OpenVINO and ONNX Runtime on one CLI window (issue 15).

    python benchmarks/bench_backends.py                                # lincae-small, 124 frames
    python benchmarks/bench_backends.py --model published --batch 1
    python benchmarks/bench_backends.py --backends eager,openvino --rounds 5

What is compared is the model's networks without the STFT (the complex STFT stays eager in
every case): ``encode_representation`` (representation -> latents) and ``decode_representation``
(latents + initial noise -> representation, one consistency step) of one window of
``--frames`` latent frames (124: the CLI's 10-s chunk with its context margins) and
``--batch`` examples (2: the two channels of a stereo file).

- ``eager``: what the CLI runs, at our automatic precision (bf16 autocast + channels-last where
  bf16 is native, else fp32 + channels-last), with the engine's allocator settings;
- ``eager-fp32``: the same at fp32 (the reference for the SNR column);
- ``compile``: ``torch.compile`` (inductor) of the same two calls at the automatic precision;
- ``openvino``: ``openvino.convert_model`` of the fp32 networks, compiled for the CPU with the
  precision hint matching ours (bf16 where native, else f32);
- ``onnxruntime``: ``torch.onnx.export`` of the fp32 networks, run by ONNX Runtime's CPU
  provider (fp32).

Rounds alternate the backends; reported are the setup time (conversion or compilation and the
first call, paid once per process: what a CLI run would add), median seconds per call, eager /
backend (> 1: the backend is faster) and the SNR against eager fp32. A backend that is not
installed is skipped with a line saying so (``pip install openvino onnxruntime onnx
onnxscript``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_cli import cpu_kind  # noqa: E402
from benchmarks.bench_gpu import random_model  # noqa: E402
from lincae_cli.engine.allocator import keep_freed_memory  # noqa: E402
from lincae_cli.engine.device import configure_threads, resolve_precision  # noqa: E402
from lincae_cli.eval.metrics import snr_db  # noqa: E402
from lincae_cli.hub.download import resolve_model_file  # noqa: E402
from lincae_cli.hub.store import load_model  # noqa: E402
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder  # noqa: E402
from lincae_cli.nn.config import PUBLISHED  # noqa: E402

BACKENDS = ("eager", "eager-fp32", "compile", "openvino", "onnxruntime")
NEEDS = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


class Encoding(torch.nn.Module):
    def __init__(self, model: ConsistencyAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        return self.model.encode_representation(rep)


class Decoding(torch.nn.Module):
    def __init__(self, model: ConsistencyAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.model.decode_representation(latents, initial_noise=noise)


def load(name: str, precision: str) -> ConsistencyAutoencoder:
    """Model ``name`` (``published``: that size with random weights) for inference at
    ``precision``; ``plain``: fp32 without channels-last, for the exporters."""
    if name == "published":
        model = random_model(PUBLISHED)  # seeded: the same weights at every load
    else:
        model = load_model(resolve_model_file(name))
    return model.eval() if precision == "plain" else model.optimize_for_inference(precision)


Call = Callable[[], torch.Tensor]


def prepare(backend: str, args: argparse.Namespace, inputs: dict, auto: str) -> tuple[Call, Call]:
    """The encode and decode calls of ``backend`` on ``inputs``."""
    rep, latents, noise = inputs["rep"], inputs["latents"], inputs["noise"]
    if backend in ("eager", "eager-fp32", "compile"):
        model = load(args.model, "fp32" if backend == "eager-fp32" else auto)
        encoding, decoding = Encoding(model), Decoding(model)
        if backend == "compile":
            encoding, decoding = torch.compile(encoding), torch.compile(decoding)
        return lambda: encoding(rep), lambda: decoding(latents, noise)
    plain = load(args.model, "plain")
    encoding, decoding = Encoding(plain).eval(), Decoding(plain).eval()
    if backend == "openvino":
        import openvino

        options = {
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": "bf16" if auto == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        core = openvino.Core()
        with torch.no_grad():
            enc = core.compile_model(
                openvino.convert_model(encoding, example_input=(rep,)), "CPU", options
            )
            dec = core.compile_model(
                openvino.convert_model(decoding, example_input=(latents, noise)), "CPU", options
            )
        return (
            lambda: torch.from_numpy(enc(rep.numpy())[0]),
            lambda: torch.from_numpy(dec((latents.numpy(), noise.numpy()))[0]),
        )
    import onnxruntime

    folder = Path(tempfile.mkdtemp(prefix="lincae-onnx-"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Its idle threads would otherwise spin between calls, slowing the backends run after it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = []
    for module, example, name in ((encoding, (rep,), "enc"), (decoding, (latents, noise), "dec")):
        with torch.no_grad():
            torch.onnx.export(module, example, folder / f"{name}.onnx", dynamo=True)
        session = onnxruntime.InferenceSession(
            folder / f"{name}.onnx", options, providers=["CPUExecutionProvider"]
        )
        names = [item.name for item in session.get_inputs()]
        feeds = {key: value.numpy() for key, value in zip(names, example, strict=True)}
        sessions.append(
            lambda session=session, feeds=feeds: torch.from_numpy(session.run(None, feeds)[0])
        )
    return sessions[0], sessions[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lincae-small", help="a model name, or 'published'")
    parser.add_argument("--frames", type=int, default=124, help="latent frames per window")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    configure_threads(None)
    keep_freed_memory()  # what the engine does for windows this size (engine/allocator.py)
    auto = resolve_precision("auto", torch.device("cpu"), inference=True)

    reference = load(args.model, "fp32")
    config = reference.config
    samples = (args.frames * config.frames_per_latent - 1) * config.hop + config.n_fft
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(args.batch, samples, generator=generator)
    with torch.inference_mode():
        rep = reference.frontend.to_representation(audio)
        latents = reference.encode_representation(rep) * config.scale_factor
    noise = torch.randn(rep.shape, generator=generator) * config.sigma_max
    inputs = {"rep": rep, "latents": latents, "noise": noise}
    with torch.inference_mode():
        exact = {
            "encode": reference.encode_representation(rep),
            "decode": reference.decode_representation(latents, initial_noise=noise),
        }
    del reference

    calls, setup, snr = {}, {}, {}
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
        if backend in NEEDS and importlib.util.find_spec(NEEDS[backend]) is None:
            print(f"{backend}: not installed, skipped (pip install {NEEDS[backend]})")
            continue
        start = time.perf_counter()
        calls[backend] = prepare(backend, args, inputs, auto)
        with torch.inference_mode():
            outputs = {
                stage: call()
                for stage, call in zip(("encode", "decode"), calls[backend], strict=True)
            }
        setup[backend] = time.perf_counter() - start
        snr[backend] = {
            stage: float(snr_db(outputs[stage].reshape(1, -1), exact[stage].reshape(1, -1)))
            for stage in exact
        }
        print(f"{backend}: set up in {setup[backend]:.1f} s", flush=True)

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for backend, pair in calls.items():
            for stage, call in zip(("encode", "decode"), pair, strict=True):
                start = time.perf_counter()
                with torch.inference_mode():
                    call()
                times.setdefault((backend, stage), []).append(time.perf_counter() - start)

    print(
        f"\n{args.model}, {args.frames} latent frames x {args.batch}, {torch.get_num_threads()} "
        f"threads, automatic precision {auto}, median of {args.rounds}"
    )
    print(f"CPU: {cpu_kind()}")
    print(
        f"{'backend':12} {'setup (s)':>9} {'stage':>7} {'s/call':>8} {'eager/it':>9} {'SNR dB':>7}"
    )
    for stage in ("encode", "decode"):
        eager = statistics.median(times[("eager", stage)]) if "eager" in calls else float("nan")
        for backend in calls:
            seconds = statistics.median(times[(backend, stage)])
            print(
                f"{backend:12} {setup[backend]:9.1f} {stage:>7} {seconds:8.3f} "
                f"{eager / seconds:9.2f} {snr[backend][stage]:7.1f}"
            )


if __name__ == "__main__":
    main()
