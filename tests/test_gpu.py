"""The GPU path of the engine (engine/device.py, engine/runner.py, engine/inference.py).

The policies are checked on any machine with a stand-in for CUDA's answers (precision, batch
size from free memory, readers, torchrun's GPU per rank, TF32 at fp32) and the reader pool on
the CPU. The tests marked ``gpu`` need a CUDA GPU (``python -m pytest -m gpu tests``; without
one they are skipped, and the default run does not select them): CPU-vs-GPU parity in fp32,
chunk and batch invariance on the GPU, and torchrun over two GPUs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lincae_cli.engine.device as device_module
from lincae_cli.audio.sources import ArraySource
from lincae_cli.engine.chunks import chunk_frames_for_seconds
from lincae_cli.engine.device import (
    MAX_AUTO_GPU_BATCH_SIZE,
    choose_device,
    default_batch_size,
    feature_elements_per_frame,
    plan_memory,
    reader_threads,
    resolve_precision,
    running_on,
    window_bytes,
)
from lincae_cli.engine.inference import Engine, EngineOptions, decode_to_array, encode_array
from lincae_cli.engine.runner import batches
from lincae_cli.engine.shard import ShardInfo
from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import load_model
from lincae_cli.latents.latfile import read_lat
from lincae_cli.nn.config import PUBLISHED, preset
from tests.conftest import FAST, run_lincae, tone, write_tone

CUDA = torch.device("cuda")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
H = 4096  # latent hop of every preset


# -- policies, with CUDA's answers stood in for -----------------------------------------------


@pytest.mark.parametrize(
    ("native", "inference", "expected"),
    [(True, True, "bf16"), (False, True, "fp16"), (True, False, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_on_a_gpu(monkeypatch, native, inference, expected) -> None:
    """Inference: bf16 where native, else fp16 (fp32 output head); training keeps fp32."""
    monkeypatch.setattr(device_module, "native_bf16", lambda device: native)
    assert resolve_precision("auto", CUDA, inference=inference) == expected
    assert resolve_precision("fp32", CUDA, inference=inference) == "fp32"
    if not native:
        assert resolve_precision("auto", torch.device("cpu"), inference=inference) == "fp32"


@pytest.mark.parametrize(("major", "native"), [(7, False), (8, True), (9, True)])
def test_native_bf16_on_a_gpu_is_ampere_or_later(monkeypatch, major, native) -> None:
    """torch.cuda.is_bf16_supported() says yes on a V100 too (emulated bf16): not native."""
    asked = []

    def properties(device: torch.device) -> SimpleNamespace:
        asked.append(device)
        return SimpleNamespace(major=major)

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    assert device_module.native_bf16(torch.device("cuda", 1)) is native
    assert asked == [torch.device("cuda", 1)]  # this GPU, not the current one


@pytest.mark.parametrize(
    ("flags", "cap", "native"),
    [
        ("avx2 avx512f avx512_bf16", None, True),
        ("avx2 amx_bf16 amx_tile", None, True),
        ("avx2 fma", None, False),
        ("avx2 avx512f avx512_bf16", "AVX2", False),  # an AVX2-only CPU, emulated
        ("avx2 avx512f avx512_bf16", "avx512_core_vnni", False),
        ("avx2 avx512f avx512_bf16", "AVX512_CORE_BF16", True),
        ("avx2 fma", "AVX512_CORE_AMX", False),  # a cap adds no instructions
    ],
)
def test_native_bf16_on_a_cpu(monkeypatch, flags, cap, native) -> None:
    """bf16 is native where the CPU has AVX-512 BF16 or AMX and oneDNN may use them."""
    monkeypatch.setattr(
        device_module, "open", lambda path: io.StringIO(f"flags\t: {flags}\n"), raising=False
    )
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    if cap is not None:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert device_module.native_bf16(torch.device("cpu")) is native
    assert resolve_precision("auto", torch.device("cpu"), inference=True) == (
        "bf16" if native else "fp32"
    )


def test_window_estimate_follows_the_model_and_the_window() -> None:
    # Published: 64·1024 + 128·256 + 256·128/2 + 256·64/4 + 256·32/8 per STFT frame.
    assert feature_elements_per_frame(PUBLISHED) == 65536 + 32768 + 16384 + 4096 + 1024
    assert window_bytes(PUBLISHED, 124) == 2 * window_bytes(PUBLISHED, 62)
    assert window_bytes(preset("small"), 124) < window_bytes(PUBLISHED, 124) / 3


PUBLISHED_WEIGHTS = 58_000_000 * 4  # the published size's 58 M parameters in fp32


@pytest.mark.parametrize(
    ("config", "device", "precision", "seconds", "keep_freed"),
    [
        # Kept freed memory fragments the heap: 5-s windows keep it within 2 GB (10-s ones
        # peaked at 2.1-3.5 GiB), and run 1.2-1.6x faster than 10-s ones without
        # (docs/speed.md).
        (PUBLISHED, "cpu", "bf16", 5, True),
        # An AVX2-only CPU: kept freed memory would need 3-s chunks; 6 s without it instead
        # (10-s windows peaked at 2.5 GB).
        (PUBLISHED, "cpu", "fp32", 6, False),
        (PUBLISHED, "cuda", "fp32", 10, False),  # the GPU's batch size follows its memory
        (preset("small"), "cpu", "fp32", 10, True),
        (preset("small"), "cpu", "bf16", 10, True),
    ],
)
def test_default_chunk_keeps_a_cpu_process_within_2_gb(
    config, device, precision, seconds, keep_freed
) -> None:
    plan = plan_memory(config, torch.device(device), precision, PUBLISHED_WEIGHTS, 8)
    assert (plan.chunk_seconds, plan.keep_freed) == (seconds, keep_freed)
    if device == "cpu":
        frames = chunk_frames_for_seconds(seconds, 44100, H) + 16
        share = 1.0 if precision == "fp32" else device_module.HALF_PRECISION_ACTIVATIONS
        growth = device_module.KEEP_FREED_GROWTH if keep_freed else 1.0
        peak = (
            device_module.PROCESS_BASE_BYTES
            + PUBLISHED_WEIGHTS
            + share * growth * window_bytes(config, frames)
        )
        assert peak <= 2 * 1024**3


def test_a_given_chunk_keeps_freed_memory_only_where_it_fits() -> None:
    cpu = torch.device("cpu")
    assert plan_memory(PUBLISHED, cpu, "bf16", PUBLISHED_WEIGHTS, 8, 5.0).keep_freed
    assert not plan_memory(PUBLISHED, cpu, "bf16", PUBLISHED_WEIGHTS, 8, 10.0).keep_freed
    small = preset("small")
    assert plan_memory(small, cpu, "bf16", PUBLISHED_WEIGHTS, 8, 10.0).keep_freed
    assert not plan_memory(small, cpu, "bf16", PUBLISHED_WEIGHTS, 8, 10.0, 8).keep_freed
    given = plan_memory(small, torch.device("cuda"), "bf16", PUBLISHED_WEIGHTS, 8, 30.0)
    assert (given.chunk_seconds, given.keep_freed) == (30.0, False)


def test_engine_takes_the_default_chunk_unless_one_is_given(monkeypatch, tiny_model_path) -> None:
    model = load_model(tiny_model_path).optimize_for_inference("fp32")
    assert Engine(model).framing.spec.chunk_frames == 108  # 10 s: within the budget
    monkeypatch.setattr(device_module, "CPU_MEMORY_BUDGET", device_module.PROCESS_BASE_BYTES)
    assert Engine(model).framing.spec.chunk_frames == chunk_frames_for_seconds(1, 44100, H)
    given = Engine(model, EngineOptions(chunk_seconds=10.0))
    assert given.framing.spec.chunk_frames == 108


@pytest.mark.parametrize(
    ("free_gib", "window_gib", "expected"),
    [(10, 1, 5), (10, 0.4, 12), (140, 1, MAX_AUTO_GPU_BATCH_SIZE), (1, 3, 1)],
)
def test_gpu_batch_size_follows_free_memory(monkeypatch, free_gib, window_gib, expected) -> None:
    asked = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return int(free_gib * 2**30), 141 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    window = int(window_gib * 2**30)
    assert default_batch_size(torch.device("cuda", 1), window) == expected
    assert asked == [torch.device("cuda", 1)]
    assert default_batch_size(torch.device("cpu"), window) == 1  # the CPU never asks


def test_readers_one_on_the_cpu_several_on_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(device_module, "available_cores", lambda: 16)
    assert reader_threads(torch.device("cpu"), ShardInfo()) == 1
    assert reader_threads(CUDA, ShardInfo()) == 4
    ranks = ShardInfo(rank=0, world_size=8, local_rank=0, local_world_size=8)
    assert reader_threads(CUDA, ranks) == 1  # 2 cores per rank: the model's thread and one


def test_engine_on_a_gpu_sizes_its_batch_and_readers(monkeypatch, tiny_model_path) -> None:
    model = load_model(tiny_model_path).optimize_for_inference("fp32")
    monkeypatch.setattr(model.__class__, "device", property(lambda self: CUDA))
    monkeypatch.setattr(device_module, "available_cores", lambda: 16)
    window = window_bytes(model.config, 108 + 2 * 8)  # the default chunk and margins
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (6 * window, 8 * window))
    engine = Engine(model)
    assert (engine.batch_size, engine.readers) == (3, 4)
    assert Engine(model, EngineOptions(batch_size=7)).batch_size == 7


@pytest.mark.parametrize(("local_rank", "gpus", "index"), [(0, 2, 0), (1, 2, 1), (3, 2, 1)])
def test_torchrun_rank_takes_its_local_gpu(monkeypatch, local_rank, gpus, index) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    shard = ShardInfo(rank=local_rank, world_size=4, local_rank=local_rank, local_world_size=4)
    for name in ("auto", "cuda"):
        assert choose_device(name, shard) == torch.device("cuda", index)
    assert choose_device("cuda:0", shard) == torch.device("cuda", 0)  # asked for: kept


def test_fp32_on_a_gpu_runs_without_tf32(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device", lambda device: _nothing())
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    seen = []
    for device, precision in [(CUDA, "fp32"), (CUDA, "bf16"), (torch.device("cpu"), "fp32")]:
        with running_on(device, precision):
            seen.append(torch.backends.cudnn.allow_tf32)
        assert torch.backends.cudnn.allow_tf32  # restored
    assert seen == [False, True, True]


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- the reader pool, on the CPU ---------------------------------------------------------------


class FakeJob:
    """A job of ``count`` windows, cut after ``wait`` (an Event, if given) is set."""

    def __init__(self, name: str, count: int, wait=None, fail_at: int | None = None) -> None:
        self.name, self.count, self.wait, self.fail_at = name, count, wait, fail_at
        self.is_open = True
        self.started = threading.Event()

    def windows(self) -> Iterator[tuple[str, int]]:
        self.started.set()
        if self.wait is not None and not self.wait.wait(timeout=10):
            raise AssertionError(f"{self.name}: never released")
        for index in range(self.count):
            if index == self.fail_at:
                raise LincaeError(f"{self.name}: unreadable")
            yield SimpleNamespace(job=self, index=index)


def _flatten(batch_list) -> list[list[tuple[str, int]]]:
    return [[(item.job.name, item.index) for item in batch.items] for batch in batch_list]


def test_reader_pool_keeps_the_order_of_one_reader() -> None:
    def jobs() -> list[FakeJob]:
        return [FakeJob("a", 5), FakeJob("b", 1, fail_at=0), FakeJob("c", 7), FakeJob("d", 2)]

    serial, pooled = list(batches(jobs(), 3)), list(batches(jobs(), 3, readers=3))
    assert _flatten(pooled) == _flatten(serial)
    for one, other in zip(serial, pooled, strict=True):
        assert [job.name for job in one.ended] == [job.name for job in other.ended]
        assert [(job.name, str(error)) for job, error in one.unreadable] == [
            (job.name, str(error)) for job, error in other.unreadable
        ]
    assert [job.name for batch in pooled for job, _ in batch.unreadable] == ["b"]


def test_reader_pool_cuts_the_next_jobs_while_the_first_is_read() -> None:
    second = FakeJob("b", 2)
    release = threading.Event()
    first = FakeJob("a", 2, wait=release)
    threading.Thread(target=lambda: second.started.wait(10) and release.set()).start()
    start = time.monotonic()
    items = sum(_flatten(batches([first, second], 4, readers=2)), [])
    assert items == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert time.monotonic() - start < 5  # with one reader, "a" would wait for "b" (10 s)


def test_reader_pool_stops_its_threads_when_closed_early() -> None:
    threads = threading.active_count()
    feed = batches([FakeJob(name, 10**6) for name in "abcd"], 2, readers=3)
    assert len(next(feed).items) == 2
    feed.close()
    assert threading.active_count() == threads


def test_engine_on_the_cpu_has_one_reader_and_one_window_per_pass(tiny_model_path) -> None:
    engine = Engine(load_model(tiny_model_path).optimize_for_inference("fp32"))
    assert (engine.batch_size, engine.readers) == (1, 1)


# -- on a CUDA GPU ----------------------------------------------------------------------------


def _engine(path: Path, device: str, precision: str = "fp32", **options) -> Engine:
    model = load_model(path, device=device).optimize_for_inference(precision)
    return Engine(model, EngineOptions(chunk_seconds=0.5, **options))


def _snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    noise = np.sum((estimate - reference) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(noise, 1e-30)))


@pytest.mark.gpu
@cuda_only
def test_gpu_fp32_matches_cpu_fp32(tiny_model_path) -> None:
    song = tone(1.3, channels=2, seed=3)
    cpu, gpu = _engine(tiny_model_path, "cpu"), _engine(tiny_model_path, "cuda")
    assert gpu.device.type == "cuda" and gpu.framing.precision == "fp32"
    lat_cpu = encode_array(cpu, song, 44100, "song")
    lat_gpu = encode_array(gpu, song, 44100, "song")
    assert lat_gpu.meta.provenance[-1]["device"] == "cuda"
    assert _snr_db(lat_gpu.latents, lat_cpu.latents) > 60
    audio_cpu, _ = decode_to_array(cpu, lat_cpu)
    audio_gpu, _ = decode_to_array(gpu, lat_cpu)
    assert _snr_db(audio_gpu, audio_cpu) > 50


@pytest.mark.gpu
@cuda_only
def test_gpu_results_do_not_depend_on_the_batch(tiny_model_path) -> None:
    song = tone(1.3, channels=2, seed=1)
    engine = _engine(tiny_model_path, "cuda", batch_size=3)
    alone = encode_array(engine, song, 44100, "song")
    others = [ArraySource("short", tone(0.2, seed=2), 44100), ArraySource("song", song, 44100)]
    batched = list(engine.run([engine.encode_job(source) for source in others]))[1].result
    # Same batch size, padding exact: the same values whatever the neighbours, to within what
    # cuDNN's choice of kernel for another window width may change in fp32.
    tolerance = 1e-5 * np.abs(alone.latents).max()
    np.testing.assert_allclose(batched.latents, alone.latents, rtol=0, atol=tolerance)
    single = encode_array(_engine(tiny_model_path, "cuda", batch_size=1), song, 44100, "song")
    assert _snr_db(single.latents, alone.latents) > 60  # another batch size: other kernels
    decoded_alone, _ = decode_to_array(engine, alone)
    jobs = [engine.decode_job(batched, None), engine.decode_job(alone, None)]
    decoded_batched = list(engine.run(jobs))[1].result.audio
    tolerance = 1e-5 * np.abs(decoded_alone).max()
    np.testing.assert_allclose(decoded_batched, decoded_alone, rtol=0, atol=tolerance)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_gpu_chunking_leaves_no_seams(tiny_model_path, precision) -> None:
    """As on the CPU (tests/test_engine_runner.py): frames next to a chunk boundary are no
    further from a whole-file pass than the others, at fp32 and at the GPU's default."""
    frames = 60
    noise = (0.1 * np.random.default_rng(0).standard_normal(frames * H)).astype(np.float32)
    engine = _engine(tiny_model_path, "cuda", resolve_precision(precision, CUDA, inference=True))
    chunked = encode_array(engine, noise[None], 44100, "noise").latents[0]
    whole_file = Engine(engine.model, EngineOptions(chunk_seconds=100.0))  # one window
    whole = encode_array(whole_file, noise[None], 44100, "noise").latents[0]
    error = np.linalg.norm(chunked - whole, axis=0) / np.linalg.norm(whole, axis=0).mean()
    chunk, margin = engine.spec.chunk_frames, engine.spec.margin_frames
    central = range(margin + chunk, frames - margin - chunk)
    near = [k for k in central if min(k % chunk, chunk - k % chunk) <= 1]
    far = [k for k in central if k not in near]
    assert error[near].mean() < 1.5 * error[far].mean() + 1e-3, (error[near], error[far])
    assert error[far].mean() < 0.3


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_torchrun_two_gpus_share_a_folder(tiny_model_path, tmp_path) -> None:
    for index in range(4):
        write_tone(tmp_path / "music" / f"{index}.wav", 0.6 + 0.2 * index, channels=2, seed=index)
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "--log-dir", str(logs), "--redirects", "1"]
    command += ["-m", "lincae_cli.cli.app", "encode", str(tmp_path / "music")]
    command += ["-o", str(tmp_path / "lat"), "--model", str(tiny_model_path), *FAST, "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    documents = [json.loads(path.read_text()) for path in logs.rglob("stdout.log")]
    assert sorted(doc["device"] for doc in documents) == ["cuda:0", "cuda:1"]
    assert sum(doc["ok"] for doc in documents) == 4
    assert all(doc["ok"] >= 1 for doc in documents)  # both ranks had work
    single = run_lincae(
        ["encode", str(tmp_path / "music"), "-o", str(tmp_path / "one"), "--model",
         str(tiny_model_path), *FAST, "--device", "cuda:0"]
    )  # fmt: skip
    assert single.returncode == 0, single.stderr.decode()
    for index in range(4):
        shared = read_lat(tmp_path / "lat" / f"{index}.lat").latents
        alone = read_lat(tmp_path / "one" / f"{index}.lat").latents
        assert _snr_db(shared, alone) > 60
