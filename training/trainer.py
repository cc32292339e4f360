"""The training loop: consistency training with Lin-CAE augmentation, EMA, exact resume,
DDP under torchrun, mixed precision (bf16, or fp16 with a loss scale), JSONL and TensorBoard
metrics, periodic validation and export.

Every random draw of step s comes from generators seeded by (seed, s, rank), and learning rate,
consistency step and gain annealing are functions of s / total_steps: a run paused at any
checkpoint and resumed follows exactly the path of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lincae_training import augment, consistency
from lincae_training.checkpoint import export_model, load_checkpoint, save_checkpoint
from lincae_training.config import TrainConfig
from lincae_training.data import Datasets, load_datasets, validation_clips
from lincae_training.metrics_log import MetricsLog, tensorboard_writer_class
from torch import nn

import lincae_cli
from lincae_cli.engine.device import (
    PRECISIONS,
    choose_device,
    configure_threads,
    join_process_group,
    resolve_precision,
)
from lincae_cli.engine.shard import shard_info
from lincae_cli.errors import LincaeError
from lincae_cli.eval import linearity
from lincae_cli.eval.codec import model_codec
from lincae_cli.eval.datasets import clip_layout
from lincae_cli.hub.store import load_model
from lincae_cli.nn.autoencoder import PRECISION_DTYPES, ConsistencyAutoencoder

# Settings of the machine and of logging, not of the optimisation: a run may resume with
# other values (e.g. more threads once a core frees up).
RESUMABLE_CHANGES = {
    "train.threads",
    "train.log_every",
    "train.checkpoint_every",
    "train.validate_every",
    "train.compile",
    "train.tensorboard",
}

# Devices fp16 training runs on. CPU autocast supports fp16 too, but it is slower than bf16
# there and not what users should pick; the tests add "cpu" to run the loss-scale path.
_FP16_DEVICE_TYPES = ("cuda",)

# The gain of the validation record's homogeneity ratio (`lincae eval` reports 0.25, 0.5 and 2).
VALIDATION_GAIN = 0.5


def crop_samples(model: ConsistencyAutoencoder, crop_frames: int) -> int:
    return (crop_frames - 1) * model.config.hop + model.config.n_fft


def channels_last_convolutions(model: nn.Module) -> None:
    """NHWC weights for the 2-D convolutions (oneDNN and cuDNN run them faster). Other 4-D
    parameters, such as the encoder's `[1, 1, F, 1]` frequency scale, keep their layout: with
    size-1 dims their NHWC strides differ from their gradients', which DDP warns about."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)


def step_generator(seed: int, step: int, rank: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0, then cosine decay to lr_min at total_steps."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * step / max(1, t.warmup_steps)
    span = max(1, t.total_steps - t.warmup_steps)
    phase = min(1.0, (step - t.warmup_steps) / span)
    return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1.0 + math.cos(math.pi * phase))


@dataclass
class StepInputs:
    """Everything random about one training step, drawn outside the network."""

    audio: torch.Tensor  # [batch, samples]
    mix_weights: torch.Tensor | None  # [batch]
    gains: torch.Tensor | None  # [batch or 2·batch]
    sigma: torch.Tensor  # [n]
    sigma_next: torch.Tensor  # [n]
    noise: torch.Tensor  # [n, 2, F, frames]

    def to(self, device: torch.device) -> StepInputs:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return StepInputs(*(move(getattr(self, f.name)) for f in fields(self)))


def draw_step_inputs(
    audio: torch.Tensor,
    step: int,
    rank: int,
    cfg: TrainConfig,
    model: ConsistencyAutoencoder,
    index_weights: torch.Tensor,
) -> StepInputs:
    progress = step / cfg.train.total_steps
    gen = step_generator(cfg.train.seed, step, rank, 1)
    mix_weights = None
    targets = audio
    if cfg.augment.additivity:
        mix_weights = augment.sample_mix_weights(audio.shape[0], cfg.augment, gen)
        w = mix_weights[:, None]
        targets = torch.cat([audio, w * audio + (1 - w) * torch.roll(audio, 1, dims=0)])
    gains = None
    if cfg.augment.gain:
        peaks = targets.abs().amax(dim=1)
        gains = augment.sample_gains(peaks, progress, cfg.augment, gen)
    n = targets.shape[0]
    index = consistency.sample_indices(n, index_weights, gen)
    next_index = (index - consistency.step_size(progress, cfg.consistency)).clamp(min=0.0)
    sigma = consistency.sigma_at(index, model.config)
    sigma_next = consistency.sigma_at(next_index, model.config)
    frames = (audio.shape[1] - model.config.n_fft) // model.config.hop + 1
    noise = torch.randn((n, 2, model.config.freq_bins, frames), generator=gen)
    return StepInputs(audio, mix_weights, gains, sigma, sigma_next, noise)


class ConsistencyLoss(nn.Module):
    """One consistency-training loss evaluation (the module DDP wraps)."""

    def __init__(self, model: ConsistencyAutoencoder, cfg: TrainConfig, autocast_dtype):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.autocast_dtype = autocast_dtype

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Per-example weighted pseudo-Huber loss `[n]`."""
        audio, mix_weights, gains = inputs.audio, inputs.mix_weights, inputs.gains
        sigma, sigma_next, noise = inputs.sigma, inputs.sigma_next, inputs.noise
        model = self.model
        device = audio.device
        cl = torch.channels_last  # oneDNN convolutions are faster on NHWC, on CPU too
        rep = model.frontend.to_representation(audio).contiguous(memory_format=cl)
        with self._autocast(device):
            latents = model.encoder(rep).float()
        targets_audio, cond = audio, latents
        if mix_weights is not None:
            targets_audio, cond = augment.add_mixtures(audio, latents, mix_weights)
        if gains is not None:
            targets_audio, cond = augment.apply_gains(targets_audio, cond, gains)
        target = model.frontend.to_representation(targets_audio).contiguous(memory_format=cl)
        noise = noise.contiguous(memory_format=cl)
        with self._autocast(device):
            pyramid, _ = model.pyramid(cond)
            student = model.unet(target + sigma[:, None, None, None] * noise, sigma, pyramid)
            with torch.no_grad():
                teacher = model.unet(
                    target + sigma_next[:, None, None, None] * noise, sigma_next, pyramid
                )
        loss = consistency.pseudo_huber(
            student, teacher.detach(), self.cfg.consistency.huber_c_per_sqrt_dim
        )
        return loss / (sigma - sigma_next)


class StopRequest:
    """Turns Ctrl-C / SIGTERM into a flag checked between steps, so a checkpoint is always
    written from a consistent state."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of `model`'s state: the EMA's starting point."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def training_precision(precision: str, device: torch.device, log=print, warn=None) -> str:
    """`train.precision` -> the one used: fp32, bf16 or fp16 (engine/device.py decides what
    auto means; the trainer adds that fp16 needs CUDA, and says what it chose).

    auto is bf16 where the hardware runs it natively (a GPU with bf16, a CPU with AVX-512 BF16
    or AMX), else fp32, said through `log`. An explicit bf16 elsewhere still runs, emulated, with
    a warning through `warn` (default: `log`): on an AVX2 CPU a step of the small model took
    14 s in bf16 against 1.6 s in fp32.
    """
    if precision not in PRECISIONS:
        choices = f"{', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"
        raise LincaeError(f"train.precision must be {choices}, not '{precision}'")
    if precision == "fp16" and device.type not in _FP16_DEVICE_TYPES:
        raise LincaeError("fp16 training needs a CUDA GPU; use auto, bf16 or fp32 on CPU")
    used = resolve_precision(precision, device)
    native = resolve_precision("auto", device) == "bf16"  # auto is bf16 exactly where native
    if precision == "auto":
        log(f"precision: {used} (auto: {'native' if native else 'no native'} bf16 here)")
    elif used == "bf16" and not native:
        (warn or log)(
            "warning: bf16 is emulated on this hardware (no AVX-512 BF16 or AMX), which makes "
            'training several times slower; set train.precision = "auto" or "fp32"'
        )
    return used


def validation_metrics(
    model: ConsistencyAutoencoder, clips: torch.Tensor, margin: int
) -> tuple[dict[str, float], torch.Tensor]:
    """The metrics of a validation record, and Dec(Enc(clips)) `[n, samples]` on the CPU, for
    clips `[n ≥ 2, samples]`, compared less `margin` samples at each end.

    The functions and decoding noise (seed 0) of `lincae eval` (docs/metrics.md): `recon_mss`,
    `recon_snr_db`; `homogeneity_ratio_0.5` is eval's `homogeneity_ratio_a0.5`;
    `additivity_ratio` is eval's `additivity_ratio_pairs` over neighbouring clips (0, 1), (2, 3),
    ... (eval pairs at random).
    """
    encode, decode = model_codec(model, seed=0, batch_size=clips.shape[0])
    latents = encode(clips)
    decoded = decode(latents)
    recon = linearity.reconstruction(encode, decode, clips, margin, decoded)
    gain = VALIDATION_GAIN
    homogeneity = linearity.homogeneity(encode, decode, clips, gain, margin, latents)
    pairs = clips.shape[0] // 2
    additivity = linearity.additivity(
        encode,
        decode,
        clips[: 2 * pairs].unflatten(0, (pairs, 2)),
        margin,
        part_latents=latents[: 2 * pairs].unflatten(0, (pairs, 2)),
    )
    record = {
        "recon_mss": recon["mss"],
        "recon_snr_db": recon["snr_db"],
        f"homogeneity_ratio_{gain:g}": homogeneity["ratio"],
        "additivity_ratio": additivity["ratio"],
    }
    return record, decoded


def stored_init_provenance(state: dict[str, Any]) -> dict[str, Any] | None:
    """Where a checkpoint's run was warm-started from (None: random init, or an older file)."""
    return json.loads(state.get("init_provenance") or "null")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        data_roots: list[Path] | list[str] | list[Path | str],
        stop_at: int | None = None,
        resume: bool = False,
        log=print,
        progress: bool = True,
        warn=None,
    ) -> None:
        """`log` takes progress lines; `warn` (default: `log`) the warnings that --quiet keeps."""
        self.cfg = cfg
        self.run_dir = run_dir
        self.data_roots = data_roots
        self.stop_at = min(stop_at or cfg.train.total_steps, cfg.train.total_steps)
        self.resume = resume
        self.log = log
        self.show_progress = progress
        self.shard = shard_info()
        self.device = choose_device("auto", self.shard)
        join_process_group(self.shard, self.device)
        if cfg.train.batch_size % self.shard.world_size:
            raise LincaeError(
                f"batch size {cfg.train.batch_size} is not divisible by "
                f"{self.shard.world_size} processes"
            )
        configure_threads(cfg.train.threads or None, self.shard)  # 0: all cores
        precision = self.precision = training_precision(cfg.train.precision, self.device, log, warn)
        if cfg.train.tensorboard:
            tensorboard_writer_class()  # a missing package fails now, not at the first log
        self.autocast_dtype = PRECISION_DTYPES[precision]
        # fp16 gradients underflow without a loss scale; bf16 and fp32 need none (a disabled
        # scaler passes the loss and the optimiser step through unchanged).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.skipped_steps = 0  # fp16 steps whose gradients overflowed (the scaler skips them)
        torch.manual_seed(cfg.train.seed)
        self.model = ConsistencyAutoencoder(cfg.model.build()).to(self.device)
        channels_last_convolutions(self.model)
        self.ema = weights_copy(self.model)
        self.ema_updates = 0
        self.step = 0
        self.optimizer = torch.optim.RAdam(self.model.parameters(), lr=cfg.train.lr)
        self.loss_module: nn.Module = ConsistencyLoss(self.model, cfg, self.autocast_dtype)
        if self.shard.is_distributed:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        if cfg.train.compile:
            self.loss_module = torch.compile(self.loss_module)
        self.index_weights = consistency.index_weights(cfg.consistency, self.model.config)
        self.data: Datasets | None = None
        self.last_checkpoint_step: int | None = None
        self.wall_seconds = 0.0
        self.commit = git_commit()  # at start: the code that trains, not the code at export
        self.init_provenance: dict[str, Any] | None = None

    @property
    def main(self) -> bool:
        """Whether this process is rank 0, the one that writes files and logs."""
        return self.shard.rank == 0

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema,
            "ema_updates": self.ema_updates,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),  # empty unless fp16
            "skipped_steps": self.skipped_steps,
            "config": self.cfg.to_json(),
            "wall_seconds": self.wall_seconds,
            "lincae_version": lincae_cli.__version__,
            "commit": self.commit,
            "init_provenance": json.dumps(self.init_provenance),
        }

    def restore(self) -> bool:
        state = load_checkpoint(self.run_dir)
        if state is None:
            return False
        stored = json.loads(state["config"])
        current = json.loads(self.cfg.to_json())
        # A key newer than the checkpoint counts as its default value.
        defaults = json.loads(TrainConfig().to_json())
        differing = sorted(
            f"{section}.{key}"
            for section in current
            if isinstance(current[section], dict)
            for key in current[section]
            if stored.get(section, {}).get(key, defaults[section][key]) != current[section][key]
            and f"{section}.{key}" not in RESUMABLE_CHANGES
        )
        if differing or stored.get("name") != current.get("name"):
            raise LincaeError(
                f"{self.run_dir}: the checkpoint was made with a different config "
                f"(differs in: {', '.join(differing) or 'name'}); use the same config to resume"
            )
        self.model.load_state_dict(state["model"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.ema_updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):  # checkpoints before the scaler have none: a fresh scale
            self.scaler.load_state_dict(state["grad_scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.step = int(state["step"])
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        self.commit = state.get("commit", self.commit)
        self.init_provenance = stored_init_provenance(state)
        self.last_checkpoint_step = self.step
        return True

    def warm_start(self, path: Path) -> None:
        """Initialise model and EMA from exported weights of the same architecture."""
        source = load_model(path)
        if source.config != self.model.config:
            raise LincaeError(
                f"train.init_from: {path} has a different model config than [model]; "
                "a warm start needs the same architecture"
            )
        self.model.load_state_dict(source.state_dict())
        self.ema = weights_copy(self.model)
        self.init_provenance = {
            "path": str(path),
            "sha256": source.weights_sha256,
            "provenance": source.provenance,
        }

    def checkpoint(self) -> None:
        if self.main:
            save_checkpoint(self.run_dir, self.state())
        # Every rank records it: the final "checkpoint unless just written" test must agree
        # across ranks, or one rank waits in the barrier below for a partner that has left.
        self.last_checkpoint_step = self.step
        if self.shard.is_distributed:
            dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` holds on any rank (collective under DDP): ranks must take the same
        branch, or the ones still training wait forever in the next all-reduce."""
        if not self.shard.is_distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    @torch.no_grad()
    def update_ema(self) -> None:
        self.ema_updates += 1
        decay = min(self.cfg.train.ema_decay, (1 + self.ema_updates) / (10 + self.ema_updates))
        for key, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                self.ema[key].lerp_(value, 1.0 - decay)
            else:
                self.ema[key].copy_(value)

    # -- loop -------------------------------------------------------------------------------

    def prepare(self) -> None:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if (self.run_dir / "checkpoint.pt").exists() and not self.resume:
            raise LincaeError(
                f"{self.run_dir} already holds a training run; pass --resume to continue it "
                "or choose another --run-dir"
            )
        if self.resume and self.restore():
            self.log(f"resumed at step {self.step} from {self.run_dir / 'checkpoint.pt'}")
        elif cfg.train.init_from:
            self.warm_start(Path(cfg.train.init_from).expanduser())
            self.log(f"initialised from {cfg.train.init_from}")
        with warnings.catch_warnings():
            if not self.main:  # skipped files are reported once, by rank 0
                warnings.simplefilter("ignore")
            self.data = load_datasets(
                self.data_roots,
                self.model.config.sample_rate,
                crop_samples(self.model, cfg.data.crop_frames),
                cfg.data.rms_threshold,
                cfg.data.valid_fraction,
                cfg.train.seed,
            )
        if self.main:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def local_batch(self, step: int) -> torch.Tensor:
        assert self.data is not None
        per_rank = self.cfg.train.batch_size // self.shard.world_size
        first = self.shard.rank * per_rank
        crops = self.data.train.batch(step, range(first, first + per_rank))
        return torch.from_numpy(crops).to(self.device)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        step = self.step
        lr = learning_rate(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        audio = self.local_batch(step)
        inputs = draw_step_inputs(audio, step, self.shard.rank, cfg, self.model, self.index_weights)
        per_example = self.loss_module(inputs.to(self.device))
        loss = per_example.mean()
        if self.any_rank(not bool(torch.isfinite(loss))):
            kept = (
                f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in "
                f"{self.run_dir}"
                if self.last_checkpoint_step is not None
                else "no checkpoint was written yet"
            )
            raise LincaeError(
                f"training stopped: non-finite loss at step {step}; {kept}. "
                "Try a lower learning rate or precision fp32."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # There is no gradient clipping; one would need self.scaler.unscale_(self.optimizer)
        # first. With fp16, a step whose gradients overflowed is skipped and the scale halved:
        # normal while the scale settles, so it is counted, not treated as an error.
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            self.skipped_steps += 1
        self.step += 1
        if self.step % cfg.train.ema_every == 0:
            self.update_ema()
        progress = step / cfg.train.total_steps
        low, high = augment.gain_range(progress, cfg.augment) if cfg.augment.gain else (1.0, 1.0)
        record = {
            "step": self.step,
            "loss": float(loss.detach()),
            "lr": lr,
            "consistency_step": consistency.step_size(progress, cfg.consistency),
            "gain_low": low,
            "gain_high": high,
        }
        if self.scaler.is_enabled():
            record.update(grad_scale=scale, skipped_steps=self.skipped_steps)
        return record

    def run(self) -> Path | None:
        """Train until `stop_at`; returns the exported model path when training is complete."""
        self.prepare()
        metrics = (
            MetricsLog(self.run_dir, self.cfg.train.tensorboard, self.step) if self.main else None
        )
        try:
            return self._run(metrics)
        finally:
            if metrics is not None:
                metrics.close()

    def _run(self, metrics: MetricsLog | None) -> Path | None:
        start_step = self.step
        started = time.monotonic()
        interrupted = False
        with StopRequest() as stop, self._progress(start_step) as advance:
            self.model.train()
            while self.step < self.stop_at:
                t0 = time.monotonic()
                record = self.train_step()
                self.wall_seconds += time.monotonic() - t0
                record["seconds_per_step"] = time.monotonic() - t0
                logged = self.step % self.cfg.train.log_every == 0 or self.step == 1
                if metrics is not None and logged:
                    metrics.write({"kind": "train", **record})
                advance(record)
                if self.step % self.cfg.train.checkpoint_every == 0:
                    self.checkpoint()
                if self.step % self.cfg.train.validate_every == 0 and metrics is not None:
                    self.validate(metrics)
                if self.any_rank(stop.requested):
                    interrupted = True
                    break
        if self.last_checkpoint_step != self.step:
            self.checkpoint()
        elapsed = time.monotonic() - started
        self.log(
            f"{'interrupted' if interrupted else 'stopped'} at step {self.step}/"
            f"{self.cfg.train.total_steps} after {elapsed:.0f} s; checkpoint in {self.run_dir}"
        )
        if self.step >= self.cfg.train.total_steps and metrics is not None:
            if self.step % self.cfg.train.validate_every:  # not validated at this step yet
                self.validate(metrics)
            return self.export()
        return None

    @contextlib.contextmanager
    def _progress(self, start: int) -> Iterator[Callable[[dict[str, float]], None]]:
        """A function to call with each step's record: a progress bar on a terminal (rank 0),
        else a log line every `train.log_every` steps."""
        if not (self.show_progress and self.main and sys.stderr.isatty()):

            def log_line(record: dict[str, float]) -> None:
                if self.main and self.step % self.cfg.train.log_every == 0:
                    self.log(
                        f"step {record['step']} loss {record['loss']:.4f} "
                        f"lr {record['lr']:.2e} {record['seconds_per_step']:.2f} s/step"
                    )

            yield log_line
            return
        from lincae_cli.engine.progress import StepsProgress

        with StepsProgress("train", total=self.stop_at, completed=start) as bar:

            def update_bar(record: dict[str, float]) -> None:
                rate = 1.0 / max(record["seconds_per_step"], 1e-9)
                bar.update(int(record["step"]), f"loss {record['loss']:.4f} {rate:.2f} steps/s")

            yield update_bar

    # -- validation and export --------------------------------------------------------------

    def ema_model(self) -> ConsistencyAutoencoder:
        model = ConsistencyAutoencoder(self.model.config).to(self.device)
        model.load_state_dict(self.ema)
        return model.eval()

    def validate(self, metrics: MetricsLog) -> dict[str, float] | None:
        """Score the EMA model on the validation clips (`validation_metrics`), write the record
        and two decoded examples; None when there are fewer than two clips."""
        assert self.data is not None
        cfg = self.cfg
        model = self.ema_model()
        layout = clip_layout(cfg.data.valid_seconds, model.config)
        clips = validation_clips(
            self.data.valid, cfg.data.valid_clips, layout.samples, cfg.data.valid_seed
        )
        if clips.shape[0] < 2:
            return None
        x = torch.from_numpy(clips)
        scores, decoded = validation_metrics(model, x, layout.margin)
        record = {"kind": "valid", "step": self.step, **scores}
        metrics.write(record)
        self._write_samples(x[:2], decoded[:2], model.config.sample_rate)
        homogeneity_key = f"homogeneity_ratio_{VALIDATION_GAIN:g}"
        self.log(
            f"valid @ {self.step}: recon MSS {record['recon_mss']:.3f} "
            f"SNR {record['recon_snr_db']:.2f} dB, homogeneity ratio "
            f"{record[homogeneity_key]:.3f}, additivity ratio {record['additivity_ratio']:.3f}"
        )
        return record

    def _write_samples(self, originals, decoded, sample_rate: int) -> None:
        import soundfile as sf

        folder = self.run_dir / "samples" / f"step{self.step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (orig, dec) in enumerate(zip(originals.cpu(), decoded.cpu(), strict=True)):
            sf.write(folder / f"{i}_original.wav", orig.numpy(), sample_rate)
            sf.write(folder / f"{i}_decoded.wav", dec.numpy(), sample_rate)

    def export(self) -> Path:
        assert self.data is not None
        provenance = {
            "trained_with": f"lincae {lincae_cli.__version__}",
            "commit": self.commit,
            "command": shlex.join(sys.argv),
            "steps": self.step,
            "initialised_from": self.init_provenance,
            "wall_seconds": round(self.wall_seconds, 1),
            "precision": self.precision,
            "data": self.data.description,
            "train_config": self.cfg.to_dict(),
        }
        path = export_model(self.run_dir, self.model, self.ema, self.cfg.name, provenance)
        self.log(f"exported EMA weights to {path}")
        return path


def export_only(cfg: TrainConfig, run_dir: Path, log=print) -> Path:
    """Export the EMA weights of the checkpoint in `run_dir` without training."""
    state = load_checkpoint(run_dir)
    if state is None:
        raise LincaeError(f"{run_dir}: no checkpoint to export (train first)")
    try:
        stored = TrainConfig.from_dict(json.loads(state["config"]))
    except LincaeError:
        stored = cfg
    # The checkpoint's own model config, so that the weights fit whatever config was passed.
    model = ConsistencyAutoencoder(stored.model.build())
    provenance = {
        "trained_with": f"lincae {lincae_cli.__version__}",
        "commit": state.get("commit") or git_commit(),
        "command": shlex.join(sys.argv),
        "steps": int(state["step"]),
        "initialised_from": stored_init_provenance(state),
        "wall_seconds": round(float(state.get("wall_seconds", 0.0)), 1),
        "train_config": stored.to_dict(),
        "partial": int(state["step"]) < stored.train.total_steps,
    }
    path = export_model(run_dir, model, state["ema"], stored.name, provenance)
    log(f"exported EMA weights of step {state['step']} to {path}")
    return path
