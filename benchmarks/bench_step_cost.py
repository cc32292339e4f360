"""What one training step costs, counted on the CPU: the input to docs/gpu-training.md's sizing.

    python benchmarks/bench_step_cost.py configs/lincae-gpu.toml --batch 2 --threads 2

Runs one warm-up step and one counted step of training/trainer.py's loss (encoder, latent
pyramid, student and teacher U-Net, backward, RAdam) on seeded noise at the config's crop length,
then times `--timed` more steps. Counted per step:

- FLOPs of the matrix work (convolutions, matrix products, attention) with PyTorch's
  `FlopCounterMode` (other operators are not counted; they are memory-bound);
- bytes the operators read and write: the sum over every aten call of its tensor arguments'
  and results' sizes, views left out (no fusion assumed; fp32, or `--bf16` for the autocast
  a GPU run uses, emulated and slow on most CPUs);
- aten calls other than views, an upper bound on GPU kernel launches.

All three grow linearly with the batch except the calls, so the report scales them to
`--scale-to` crops per step for the GPU arithmetic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lincae_training import consistency  # noqa: E402
from lincae_training.config import TrainConfig  # noqa: E402
from lincae_training.trainer import (  # noqa: E402
    ConsistencyLoss,
    channels_last_convolutions,
    crop_samples,
    draw_step_inputs,
)

from lincae_cli.nn.autoencoder import ConsistencyAutoencoder  # noqa: E402


class BytesCounter(TorchDispatchMode):
    """Sums the bytes of every aten call's tensor arguments and results, and counts the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        if returns and returns[0].alias_info is not None and not returns[0].alias_info.is_write:
            return out  # a view: no kernel, nothing moved
        flat, _ = tree_flatten((args, kwargs or {}, out))
        self.bytes += sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
        self.calls += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "lincae-gpu.toml"))
    parser.add_argument("--batch", type=int, default=2, help="crops per counted step")
    parser.add_argument("--timed", type=int, default=2, help="timed steps after the count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale-to", type=int, default=0, help="crops per GPU step (0: config)")
    parser.add_argument(
        "--bf16", action="store_true", help="count under bf16 autocast, as on a GPU (slow here)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gpu_batch = args.scale_to or TrainConfig.load(args.config).train.batch_size
    cfg = TrainConfig.load(args.config, [f"train.batch_size={args.batch}"])
    torch.manual_seed(0)
    model = ConsistencyAutoencoder(cfg.model.build())
    channels_last_convolutions(model)
    loss_module = ConsistencyLoss(model, cfg, torch.bfloat16 if args.bf16 else None)
    optimizer = torch.optim.RAdam(model.parameters(), lr=cfg.train.lr)
    samples = crop_samples(model, cfg.data.crop_frames)
    audio = 0.1 * torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(0))
    weights = consistency.index_weights(cfg.consistency, model.config)

    def step(index: int) -> None:
        inputs = draw_step_inputs(audio, index, 0, cfg, model, weights)
        loss = loss_module(inputs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)
    with FlopCounterMode(display=False) as flop_counter, BytesCounter() as byte_counter:
        step(1)
    seconds = []
    for index in range(args.timed):
        start = time.perf_counter()
        step(2 + index)
        seconds.append(time.perf_counter() - start)
    flops = flop_counter.get_total_flops()
    scale = gpu_batch / args.batch
    report = {
        "config": Path(args.config).name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "crop_frames": cfg.data.crop_frames,
        "crops_counted": args.batch,
        "examples_per_crop": 2 if cfg.augment.additivity else 1,
        "gflop_per_crop": round(flops / args.batch / 1e9, 2),
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "mbytes_per_crop": round(byte_counter.bytes / args.batch / 1e6, 1),
        "aten_calls_per_step": byte_counter.calls,
        "cpu_seconds_per_step": round(statistics.median(seconds), 2) if seconds else None,
        "cpu_threads": args.threads,
        "cpu_gflops_per_s": round(flops / statistics.median(seconds) / 1e9, 1) if seconds else None,
        "scaled_crops": round(scale * args.batch),
        "scaled_tflop_per_step": round(flops * scale / 1e12, 2),
        "scaled_gbytes_per_step": round(byte_counter.bytes * scale / 1e9, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
