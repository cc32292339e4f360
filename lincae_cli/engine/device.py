"""Where and how the model runs: device choice, CPU threads, precision, the process group.

One policy for inference (the engine, `lincae eval`) and training (the trainer): ``auto``
prefers this rank's CUDA GPU, then Apple MPS, then the CPU; precision ``auto`` is bf16 where
the hardware runs it natively, else fp32; CPU threads are shared evenly among torchrun's local
ranks.
"""

from __future__ import annotations

import os

import torch

from lincae_cli.engine.options import check_precision
from lincae_cli.engine.shard import ShardInfo
from lincae_cli.errors import LincaeError

# On a CPU a 10 s window already fills every core: larger batches only cost memory.
DEFAULT_CPU_BATCH_SIZE = 1
DEFAULT_GPU_BATCH_SIZE = 8


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


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_CPU_BATCH_SIZE if device.type == "cpu" else DEFAULT_GPU_BATCH_SIZE


def configure_threads(threads: int | None, shard: ShardInfo | None = None) -> int:
    """Use every core this process may run on, shared evenly among torchrun's local ranks.

    An explicit ``threads`` or ``OMP_NUM_THREADS`` wins. Returns the thread count in use.
    """
    shard = shard or ShardInfo()
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        threads = max(1, cores // shard.local_world_size)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix maths is native here (CUDA with bf16, or a CPU with AVX-512 BF16 /
    AMX), so that autocast to bf16 is a speed-up rather than an emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision ``name`` means on ``device``: ``auto`` is bf16 where it is native, else
    fp32; fp32, bf16 and fp16 stand for themselves."""
    check_precision(name)
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def join_process_group(shard: ShardInfo, device: torch.device) -> None:
    """Join torchrun's process group (NCCL on CUDA, gloo otherwise) when there is one."""
    import torch.distributed as dist

    if not shard.is_distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
