"""Training speed: our training step vs the same step on linear-cae's UNet, one process.

    python benchmarks/bench_train.py --rounds 5 --steps 3 --threads 1

Both sides run the configs/lincae-small.toml step (model preset "small", batch 4 doubled to 8 by
the mixtures, 32-frame crops, gains) on the same audio and the same random draws (noise levels,
noise, gains, mix weights). Theirs is built from `linear_cae.components.generator.UNet` with the
generator kwargs of our "small" preset and runs the step as linear-cae's training does: its own
STFT frontend, the encoder on all 2B examples (the mixtures' latents are then replaced by the
weighted sums), the teacher computed with autograd and detached, fp32 (its autocast is
CUDA-only), contiguous NCHW. Ours runs the step of training/trainer.py in fp32 (like for like)
and in our default bf16 autocast + channels-last. Variants alternate within every round so that
a machine loaded by other work slows them alike; the report gives the median time per step, the
speed ratio ours/theirs, and the top operators of one profiled step of each.
Needs `pip install --no-deps linear-cae`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lincae_training import consistency  # noqa: E402
from lincae_training.config import TrainConfig  # noqa: E402
from lincae_training.trainer import (  # noqa: E402
    ConsistencyLoss,
    StepInputs,
    channels_last_convolutions,
    crop_samples,
    draw_step_inputs,
)

from lincae_cli.engine.device import configure_threads, native_bf16  # noqa: E402
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder  # noqa: E402
from lincae_cli.nn.config import ModelConfig  # noqa: E402


def linear_cae_kwargs(config: ModelConfig) -> dict:
    """linear-cae UNet kwargs for our ModelConfig (the inverse of ModelConfig.from_published)."""
    return {
        "base_channels": config.base_channels,
        "layers_list": list(config.layers),
        "multipliers_list": list(config.multipliers),
        "attention_list": list(config.attention),
        "freq_downsample_list": list(config.freq_downsample),
        "layers_list_encoder": list(config.encoder_layers),
        "attention_list_encoder": list(config.encoder_attention),
        "bottleneck_base_channels": config.bottleneck_base_channels,
        "bottleneck_channels": config.latent_channels,
        "num_bottleneck_layers": config.num_bottleneck_layers,
        "hop": config.hop,
        "cond_channels": config.cond_channels,
        "heads": config.heads,
        "use_fourier": config.use_fourier,
        "fourier_scale": config.fourier_scale,
        "frequency_scaling": config.frequency_scaling,
        "pre_normalize_downsampling_encoder": config.pre_normalize_downsampling_encoder,
        "pre_normalize_2d_to_1d": config.pre_normalize_2d_to_1d,
        "sigma_min": config.sigma_min,
        "sigma_max": config.sigma_max,
        "sigma_data": config.sigma_data,
    }


class OurStep:
    """One optimiser step of training/trainer.py (Trainer.train_step without data loading)."""

    def __init__(self, cfg: TrainConfig, autocast_dtype: torch.dtype | None) -> None:
        torch.manual_seed(cfg.train.seed)
        self.model = ConsistencyAutoencoder(cfg.model.build())
        channels_last_convolutions(self.model)
        self.loss = ConsistencyLoss(self.model, cfg, autocast_dtype)
        self.optimizer = torch.optim.RAdam(self.model.parameters(), lr=cfg.train.lr)

    def __call__(self, inputs: StepInputs) -> float:
        loss = self.loss(inputs).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class TheirStep:
    """The same step on linear-cae's UNet and frontend, as linear-cae's training runs it."""

    def __init__(self, cfg: TrainConfig) -> None:
        from linear_cae.components.frontends import ScaledComplexSTFT
        from linear_cae.components.generator import UNet

        config = cfg.model.build()
        torch.manual_seed(cfg.train.seed)
        self.unet = UNet(**linear_cae_kwargs(config))
        self.frontend = ScaledComplexSTFT(
            hop_size=config.hop,
            n_fft_factor=config.n_fft_factor,
            alpha_rescale=config.alpha,
            beta_rescale=config.beta,
        )
        self.huber_c = cfg.consistency.huber_c_per_sqrt_dim
        self.optimizer = torch.optim.RAdam(self.unet.parameters(), lr=cfg.train.lr)

    def __call__(self, inputs: StepInputs) -> float:
        audio, weights, gains = inputs.audio, inputs.mix_weights, inputs.gains
        batch = audio.shape[0]
        w = weights[:, None]
        wav = torch.cat([audio, w * audio + (1 - w) * torch.roll(audio, 1, dims=0)])
        rep = self.frontend.to_representation(wav)
        target = self.frontend.to_representation(gains[:, None] * wav)
        latents = self.unet.encoder(rep)  # all 2B, as linear-cae does
        clean = latents[:batch]
        w_latent = weights[:, None, None]
        mixed = w_latent * clean + (1 - w_latent) * torch.roll(clean, 1, dims=0)
        latents = torch.cat([clean, mixed]) * gains[:, None, None]
        pyramid = self.unet.decoder(latents)
        sigma, sigma_next, noise = inputs.sigma, inputs.sigma_next, inputs.noise
        teacher = self.unet.forward_generator(
            latents, target + sigma_next[:, None, None, None] * noise, sigma_next, pyramid
        ).detach()
        student = self.unet.forward_generator(
            latents, target + sigma[:, None, None, None] * noise, sigma, pyramid
        )
        diff = (student - teacher).flatten(1)
        c = self.huber_c * diff.shape[1] ** 0.5
        loss = torch.nan_to_num(torch.sqrt((diff**2).sum(1) + c * c) - c)
        loss = (loss / (sigma - sigma_next)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def top_operators(step: Callable[[StepInputs], float], inputs: StepInputs, count: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(inputs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "lincae-small.toml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    configure_threads(args.threads or None)

    cfg = TrainConfig.load(args.config)
    variants: dict[str, Callable[[StepInputs], float]] = {
        "theirs fp32": TheirStep(cfg),
        "ours fp32": OurStep(cfg, None),
        "ours bf16+channels_last": OurStep(cfg, torch.bfloat16),
    }
    ours = variants["ours fp32"]
    assert isinstance(ours, OurStep)
    model = ours.model
    count = sum(p.numel() for p in model.parameters())
    their_count = sum(p.numel() for p in variants["theirs fp32"].unet.parameters())  # type: ignore[attr-defined]
    samples = crop_samples(model, cfg.data.crop_frames)
    generator = torch.Generator().manual_seed(0)
    time_axis = torch.arange(samples) / model.config.sample_rate
    audio = torch.stack(
        [
            0.3 * torch.sin(2 * torch.pi * (110.0 * (i + 2)) * time_axis)
            + 0.05 * torch.randn(samples, generator=generator)
            for i in range(cfg.train.batch_size)
        ]
    )
    index_weights = consistency.index_weights(cfg.consistency, model.config)

    def inputs_for(step: int) -> StepInputs:
        inputs = draw_step_inputs(audio, step, 0, cfg, model, index_weights)
        assert inputs.gains is not None and inputs.mix_weights is not None
        return inputs

    print(
        f"config {Path(args.config).name}: preset {cfg.model.preset}, batch "
        f"{cfg.train.batch_size} (x2 mixtures), {cfg.data.crop_frames} frames ({samples} samples), "
        f"gain {cfg.augment.gain}, additivity {cfg.augment.additivity}"
    )
    print(
        f"parameters: ours {count:,}, theirs {their_count:,}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), native bf16: {native_bf16(torch.device('cpu'))}"
    )
    for step in variants.values():  # warm-up (allocator, oneDNN primitive caches)
        step(inputs_for(0))
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    step_index = 1
    for round_index in range(args.rounds):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in order:
            for k in range(args.steps):
                inputs = inputs_for(step_index + k)
                start, start_cpu = time.perf_counter(), time.process_time()
                variants[name](inputs)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        step_index += args.steps

    # CPU seconds (all threads of this process) are the work done; on a loaded machine the
    # wall time adds the time spent waiting for a core.
    print(f"\nmedian per step over {args.rounds} rounds x {args.steps} steps (wall; CPU):")
    for times, label in ((wall, "wall"), (cpu, "CPU")):
        medians = {name: statistics.median(values) for name, values in times.items()}
        theirs = medians["theirs fp32"]
        for name, median in medians.items():
            spread = f"[{min(times[name]):.2f}-{max(times[name]):.2f}]"
            ratio = "" if name == "theirs fp32" else f"  speed ours/theirs x{theirs / median:.2f}"
            print(
                f"  {label:4s} {name:24s} {median:7.3f} s {spread:15s} "
                f"{1 / median:6.3f} steps/s{ratio}"
            )
    if not args.no_profile:
        print("\ntop operators by self CPU time (one step each):")
        for name, step in variants.items():
            print(f"  {name}: {top_operators(step, inputs_for(10_000), 6)}")


if __name__ == "__main__":
    main()
