"""Where and how the model runs: device choice, CPU threads, precision, batch size, readers,
the process group.

One policy for inference (the engine, `lincae eval`) and training (the trainer): ``auto``
prefers this rank's CUDA GPU, then Apple MPS, then the CPU; precision ``auto`` is bf16 where
the hardware runs it natively, else fp32 (for inference on a CUDA GPU without bf16: fp16); CPU
threads are shared evenly among torchrun's local ranks. On a GPU the batch size follows the
free memory and several threads read the inputs; on the CPU both stay at what the CPU needs
(one window per pass, one reader).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lincae_cli.engine.chunks import DEFAULT_CHUNK_SECONDS, chunk_frames_for_seconds
from lincae_cli.engine.options import check_precision
from lincae_cli.engine.shard import ShardInfo, shard_info
from lincae_cli.errors import LincaeError
from lincae_cli.nn.config import ModelConfig

# On a CPU a 10 s window already fills every core: larger batches only cost memory.
DEFAULT_CPU_BATCH_SIZE = 1
DEFAULT_GPU_BATCH_SIZE = 8  # on a GPU whose free memory cannot be asked (MPS)
# The automatic GPU batch size: at most this many windows (more only adds padding to short
# runs, as every pass is padded to the batch size), in this share of the free memory.
MAX_AUTO_GPU_BATCH_SIZE = 16
FREE_MEMORY_SHARE = 0.5
# Peak memory of one window in fp32, in bytes per element of the generator's feature maps
# (`feature_elements_per_frame` · STFT frames): the largest of encode and decode, small and
# published sizes, measured on the CPU as the peak RSS a window adds (`python
# benchmarks/bench_gpu.py --cpu-memory`: 8.8 to 17.0 at 32-frame windows, decode the largest;
# README, GPU). About 2 GB per default window of the published size, 0.5 GB of lincae-small.
PEAK_BYTES_PER_FEATURE_ELEMENT = 17
# Reader threads on a GPU (decoding, resampling and cutting files ahead of the model).
MAX_GPU_READERS = 4
# On the CPU the default chunk keeps a process within this (issue 15): the published size at
# fp32 (an AVX2-only CPU) peaked at 2.5 GB with 10-s chunks.
CPU_MEMORY_BUDGET = 2 * 1024**3
# What such a process holds besides the model's weights and one window: Python, torch and
# lincae (340 MiB measured) and the allocator's slack (the peaks measured run ~100 MiB above
# this model).
PROCESS_BASE_BYTES = 450 * 2**20
# A window's activations at bf16/fp16 against fp32 (published size, whole-process peaks of
# `lincae decode`: 1.25 against 1.9 GB above the rest).
HALF_PRECISION_ACTIVATIONS = 0.67
# A heap that keeps freed memory (engine/allocator.py) grows past the windows' own peak as
# blocks of other sizes split what they freed. With 5-s chunks the published size peaked at up
# to 1.57x the window's estimate above the rest at bf16 (1450-1814 MiB, 8 whole `lincae
# encode`/`decode` processes) and 1.66x at fp32 (1472-2474 MiB, 5 runs, the most where the
# last window is shorter); with 10-s chunks at bf16, 2157-3548 MiB.
KEEP_FREED_GROWTH = 1.8
# The shortest default chunk worth keeping freed memory for: below it the context margins
# (16 frames) take over a quarter of every window's work.
MIN_KEEP_FREED_CHUNK_SECONDS = 5


def choose_device(name: str, shard: ShardInfo | None = None) -> torch.device:
    """``auto``: this rank's CUDA GPU if there is one, else MPS, else the CPU."""
    shard = shard or ShardInfo()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name.startswith("cuda"):
        if not cuda:
            raise LincaeError("--device cuda: no CUDA GPU is available to this torch")
        if name == "cuda":
            return torch.device("cuda", shard.local_rank % torch.cuda.device_count())
    if name.startswith("mps") and not mps:
        raise LincaeError("--device mps: Apple MPS is not available to this torch")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LincaeError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None


def feature_elements_per_frame(config: ModelConfig) -> int:
    """Elements of the generator's feature maps per STFT frame, summed over its levels (level
    ``l`` has ``base_channels · multipliers[l]`` channels over the bins and frames left by the
    downsamplings before it): what a window's activation memory grows with."""
    freq_bins, time_divisor, total = config.freq_bins, 1, 0
    for level, multiplier in enumerate(config.multipliers):
        total += config.base_channels * multiplier * freq_bins // time_divisor
        if level < len(config.freq_downsample):
            frequency_only = config.freq_downsample[level] == 1
            freq_bins //= 4 if frequency_only else 2
            time_divisor *= 1 if frequency_only else 2
    return total


def window_bytes(config: ModelConfig, window_frames: int) -> int:
    """Estimated peak memory (bytes, fp32) of one window of ``window_frames`` latent frames
    through the model, encode or decode: an upper bound for bf16/fp16, where most activations
    take half the bytes."""
    stft_frames = window_frames * config.frames_per_latent
    return PEAK_BYTES_PER_FEATURE_ELEMENT * feature_elements_per_frame(config) * stft_frames


@dataclass(frozen=True)
class MemoryPlan:
    """How a process runs its windows: the chunk length, and whether freed memory is kept for
    the next window (engine/allocator.py)."""

    chunk_seconds: float
    keep_freed: bool


def plan_memory(
    config: ModelConfig,
    device: torch.device,
    precision: str,
    model_bytes: int,
    margin: int,
    chunk_seconds: float | None = None,
    batch_size: int = 1,
) -> MemoryPlan:
    """The chunk length (``chunk_seconds``, None: the default) and whether to keep freed memory.

    Keeping freed memory saves the page faults of every window's activations (a quarter to a
    third of the CPU time of the published size) but fragments the heap by up to
    `KEEP_FREED_GROWTH`, so on the CPU the default is the longest chunk that keeps the process
    within `CPU_MEMORY_BUDGET` with freed memory kept, if that is at least
    `MIN_KEEP_FREED_CHUNK_SECONDS` (10 s for lincae-small, 5 s for the published size at bf16);
    otherwise the longest that fits without (the published size at fp32: 6 s). A given chunk
    keeps freed memory if it fits with it.
    Other devices hold no windows in host memory: their chunk is `DEFAULT_CHUNK_SECONDS`."""
    if device.type != "cpu":
        return MemoryPlan(chunk_seconds or DEFAULT_CHUNK_SECONDS, keep_freed=False)

    def fits(seconds: float, keep_freed: bool) -> bool:
        frames = chunk_frames_for_seconds(seconds, config.sample_rate, config.latent_hop_samples)
        window = batch_size * window_bytes(config, frames + 2 * margin)
        peak = cpu_peak_bytes(window, precision, model_bytes, keep_freed)
        return peak <= CPU_MEMORY_BUDGET

    if chunk_seconds is not None:
        return MemoryPlan(chunk_seconds, fits(chunk_seconds, keep_freed=True))
    kept = _longest_fitting(lambda seconds: fits(seconds, keep_freed=True))
    if kept >= MIN_KEEP_FREED_CHUNK_SECONDS:
        return MemoryPlan(kept, keep_freed=True)
    return MemoryPlan(_longest_fitting(lambda seconds: fits(seconds, False)), keep_freed=False)


def _longest_fitting(fits: Callable[[float], bool]) -> float:
    """The longest whole number of seconds up to `DEFAULT_CHUNK_SECONDS` that ``fits``, at
    least 1."""
    seconds = DEFAULT_CHUNK_SECONDS
    while seconds > 1 and not fits(seconds):
        seconds = math.ceil(seconds) - 1
    return seconds


def cpu_peak_bytes(window: int, precision: str, model_bytes: int, keep_freed: bool) -> float:
    """Estimated peak memory of a CPU process running windows of ``window`` bytes (fp32
    estimate, `window_bytes`) at ``precision``."""
    share = 1.0 if precision == "fp32" else HALF_PRECISION_ACTIVATIONS
    growth = KEEP_FREED_GROWTH if keep_freed else 1.0
    return PROCESS_BASE_BYTES + model_bytes + share * growth * window


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers."""
    tensors = (*model.parameters(), *model.buffers())
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def default_batch_size(device: torch.device, per_window_bytes: int | None = None) -> int:
    """Windows per forward pass when ``--batch-size`` is not given: 1 on the CPU; on a CUDA GPU
    as many windows of ``per_window_bytes`` as fit in `FREE_MEMORY_SHARE` of its free memory
    now (1 to `MAX_AUTO_GPU_BATCH_SIZE`); elsewhere `DEFAULT_GPU_BATCH_SIZE`."""
    if device.type == "cpu":
        return DEFAULT_CPU_BATCH_SIZE
    if device.type != "cuda" or not per_window_bytes:
        return DEFAULT_GPU_BATCH_SIZE
    free_bytes, _ = torch.cuda.mem_get_info(device)
    fitting = int(free_bytes * FREE_MEMORY_SHARE // per_window_bytes)
    return max(1, min(MAX_AUTO_GPU_BATCH_SIZE, fitting))


def reader_threads(device: torch.device, shard: ShardInfo | None = None) -> int:
    """Threads that read, resample and cut inputs ahead of the model: one on the CPU (the model
    needs the cores); on a GPU up to `MAX_GPU_READERS`, from this rank's share of the cores
    (``shard``, None: torchrun's variables)."""
    if device.type == "cpu":
        return 1
    shard = shard or shard_info()
    return max(1, min(MAX_GPU_READERS, available_cores() // shard.local_world_size - 1))


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(threads: int | None, shard: ShardInfo | None = None) -> int:
    """Use every core this process may run on, shared evenly among torchrun's local ranks.

    An explicit ``threads`` or ``OMP_NUM_THREADS`` wins. Returns the thread count in use.
    """
    shard = shard or ShardInfo()
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, available_cores() // shard.local_world_size)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix maths is native here (CUDA with bf16, or a CPU with AVX-512 BF16 /
    AMX), so that autocast to bf16 is a speed-up rather than an emulation."""
    if device.type == "cuda":
        # Compute capability 8 (Ampere) and later; torch.cuda.is_bf16_supported() also says
        # yes where bf16 is only emulated, and asks the current device, not this one.
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    if device.type != "cpu" or _onednn_capped_below_bf16():
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# oneDNN instruction sets without bf16 dot products: capped to one of these (ONEDNN_MAX_CPU_ISA),
# oneDNN emulates bf16 convolutions as an AVX2-only CPU does (~9x slower than fp32).
_ISAS_WITHOUT_BF16 = frozenset(
    ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
)


def _onednn_capped_below_bf16() -> bool:
    """Whether oneDNN is told to use no instruction set with bf16 maths (``ONEDNN_MAX_CPU_ISA``
    or its older name ``DNNL_MAX_CPU_ISA``): how an AVX2-only CPU is emulated on a newer one."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.strip().upper() in _ISAS_WITHOUT_BF16


def resolve_precision(name: str, device: torch.device, *, inference: bool = False) -> str:
    """The precision ``name`` means on ``device``: ``auto`` is bf16 where it is native; for
    ``inference`` on a CUDA GPU without it (before Ampere), fp16, the generator's output head
    staying fp32 (nn/unet.py); else fp32. fp32, bf16 and fp16 stand for themselves. (Training
    keeps fp32 there: fp16 training needs a loss scale, which `train.precision = "fp16"` asks
    for explicitly.)"""
    check_precision(name)
    if name == "auto":
        if native_bf16(device):
            return "bf16"
        return "fp16" if inference and device.type == "cuda" else "fp32"
    return name


@contextlib.contextmanager
def running_on(device: torch.device, precision: str) -> Iterator[None]:
    """What forward passes on ``device`` at ``precision`` run under. On a CUDA GPU: that GPU
    as the current device (pinned host buffers and cuDNN handles then belong to it, not to
    cuda:0 as in every torchrun process otherwise) and, at fp32, TF32 off (cuDNN convolutions
    run in TF32 by default on Ampere and later, which is not the fp32 asked for). Nothing
    elsewhere."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        with torch.cuda.device(device):
            if precision == "fp32":
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def join_process_group(shard: ShardInfo, device: torch.device) -> None:
    """Join torchrun's process group (NCCL on CUDA, gloo otherwise) when there is one."""
    import torch.distributed as dist

    if not shard.is_distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
