"""The training loop: consistency training with Lin-CAE augmentation, EMA, exact resume,
DDP under torchrun, mixed precision (bf16, or fp16 with a loss scale), JSONL and TensorBoard
metrics, periodic validation and export.

Every random draw of step s comes from generators seeded by (seed, s, rank), and learning rate,
consistency step and gain annealing are functions of s and the run's `Schedule` (s / total_steps
until a resume changes total_steps): a run paused at any checkpoint and resumed follows exactly
the path of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
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
from lincae_training.checkpoint import (
    CHECKPOINT_NAME,
    EXPORT_NAME,
    earlier_export_provenance,
    export_model,
    export_provenance,
    load_checkpoint,
    recorded_run,
    save_checkpoint,
    stored_config,
    stored_init_provenance,
)
from lincae_training.config import RESUMABLE_KEYS, TrainConfig
from lincae_training.data import (
    MUSDB_PREFIX,
    CropSampler,
    Datasets,
    DeviceCropSampler,
    load_datasets,
    validation_clips,
)
from lincae_training.metrics_log import MetricsLog, tensorboard_writer_class
from lincae_training.schedule import Schedule, cosine_learning_rate
from torch import nn

import lincae_cli
from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.engine.device import (
    choose_device,
    configure_threads,
    join_process_group,
    resolve_precision,
)
from lincae_cli.engine.options import PRECISIONS
from lincae_cli.engine.shard import shard_info
from lincae_cli.errors import LincaeError
from lincae_cli.eval import linearity
from lincae_cli.eval.codec import model_codec
from lincae_cli.eval.datasets import clip_layout
from lincae_cli.hub.store import load_model
from lincae_cli.nn.autoencoder import PRECISION_DTYPES, ConsistencyAutoencoder

# Devices fp16 training runs on. CPU autocast supports fp16 too, but it is slower than bf16
# there and not what users should pick; the tests add "cpu" to run the loss-scale path.
_FP16_DEVICE_TYPES = ("cuda",)

_DATA_REQUIRED = "--data is required to train (a folder of audio files, or musdb:PATH)"

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


def step_generator(
    seed: int, step: int, rank: int, stream: int, device: torch.device | None = None
) -> torch.Generator:
    """A generator (on `device`, default the CPU) seeded by (seed, step, rank, stream)."""
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device or "cpu")
    return generator.manual_seed(int(state[0]) << 32 | int(state[1]))


def config_schedule(cfg: TrainConfig) -> Schedule:
    """The schedule of a run that keeps the config's `train.total_steps` throughout."""
    return Schedule(cfg.train.warmup_steps, cfg.train.total_steps)


def learning_rate(step: int, cfg: TrainConfig, schedule: Schedule | None = None) -> float:
    """Linear warm-up from 0, then cosine decay to lr_min at the end of `schedule` (default:
    the config's, ending at total_steps)."""
    return cosine_learning_rate(
        step, cfg.train.lr, cfg.train.lr_min, schedule or config_schedule(cfg)
    )


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
    schedule: Schedule | None = None,
) -> StepInputs:
    progress = (schedule or config_schedule(cfg)).progress(step)
    gen = step_generator(cfg.train.seed, step, rank, 1)
    mix_weights = None
    targets = audio
    # The small draws come from `gen` on the CPU wherever `audio` is (on a GPU too).
    if cfg.augment.additivity:
        mix_weights = augment.sample_mix_weights(audio.shape[0], cfg.augment, gen)
        w = mix_weights[:, None].to(audio.device)
        targets = torch.cat([audio, w * audio + (1 - w) * torch.roll(audio, 1, dims=0)])
    gains = None
    if cfg.augment.gain:
        peaks = targets.abs().amax(dim=1).cpu()
        gains = augment.sample_gains(peaks, progress, cfg.augment, gen)
    n = targets.shape[0]
    index = consistency.sample_indices(n, index_weights, gen)
    next_index = (index - consistency.step_size(progress, cfg.consistency)).clamp(min=0.0)
    sigma = consistency.sigma_at(index, model.config)
    sigma_next = consistency.sigma_at(next_index, model.config)
    frames = (audio.shape[1] - model.config.n_fft) // model.config.hop + 1
    shape = (n, 2, model.config.freq_bins, frames)
    if audio.device.type == "cpu":
        noise = torch.randn(shape, generator=gen)
    else:  # drawn where it is used: at GPU batch sizes it is hundreds of MB per step
        device_gen = step_generator(cfg.train.seed, step, rank, 2, audio.device)
        noise = torch.randn(shape, generator=device_gen, device=audio.device)
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
        data_roots: list[Path] | list[str] | list[Path | str] | None,
        stop_at: int | None = None,
        resume: bool = False,
        log=print,
        progress: bool = True,
        warn=None,
        overrides: list[str] | None = None,
    ) -> None:
        """`log` takes progress lines; `warn` (default: `log`) the warnings that --quiet keeps.
        `data_roots` None (resuming only): the data the run recorded. `overrides`: the
        `--set` items that made `cfg` from its file, recorded so that a resume needs none of
        them again (None on resume: keep the recorded ones)."""
        if not data_roots and not resume:
            raise LincaeError(_DATA_REQUIRED)
        self.cfg = cfg
        self.run_dir = run_dir
        self.data_roots = data_roots
        self.overrides = overrides
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
        if self.device.type == "cuda":
            # Every step has the same shapes: cuDNN times its algorithms once and keeps the best.
            torch.backends.cudnn.benchmark = True
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
        self.schedule = config_schedule(cfg)
        # What the export's provenance says of how the run was trained (see checkpoint.py).
        self.run_record: dict[str, Any] = {
            "command": shlex.join(sys.argv),
            "overrides": list(overrides or []),
            "precision": precision,
            "resumed": [],
        }
        self.valid_clips: torch.Tensor | None = None  # picked once, in prepare()

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
            "run": json.dumps(self.run_record),
            "schedule": json.dumps(self.schedule.to_json()) if self.schedule.knots else "",
        }

    def restore(self) -> bool:
        state = load_checkpoint(self.run_dir)
        if state is None:
            return False
        stored = json.loads(state["config"])
        self._check_resumable(stored)
        step = int(state["step"])
        stored_total = int(stored["train"]["total_steps"])
        self.schedule = Schedule.from_json(
            self.cfg.train.warmup_steps, stored_total, json.loads(state.get("schedule") or "[]")
        )
        if self.cfg.train.total_steps != stored_total:
            self._change_total_steps(step, stored_total, recorded_run(state))
        self.model.load_state_dict(state["model"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.ema_updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):  # checkpoints before the scaler have none: a fresh scale
            self.scaler.load_state_dict(state["grad_scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.step = step
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        commit, self.commit = self.commit, state.get("commit", self.commit)
        self.init_provenance = stored_init_provenance(state)
        self.last_checkpoint_step = self.step
        resumed = {"step": step, **self.run_record, "commit": commit}
        # A checkpoint older than the record: how the run started is unknown.
        self.run_record = recorded_run(state) or dict(self.run_record, command=None, precision=None)
        self.run_record.setdefault("resumed", []).append(
            {key: resumed[key] for key in ("step", "command", "precision", "commit")}
        )
        if self.overrides is not None:
            self.run_record["overrides"] = list(self.overrides)
        return True

    def _check_resumable(self, stored: dict[str, Any]) -> None:
        """Refuse, naming the keys, a config that changes what a run cannot change mid-way."""
        changes = self.cfg.changes_from(stored)
        fixed = [key for key in changes if key not in RESUMABLE_KEYS]
        if fixed:
            differences = ", ".join(
                f"{key} ({changes[key][0]!r} there, {changes[key][1]!r} now)" for key in fixed
            )
            raise LincaeError(
                f"{self.run_dir}: the checkpoint was made with a different config: "
                f"{differences}; a resumed run can change only {', '.join(RESUMABLE_KEYS)}"
            )

    def _change_total_steps(self, step: int, stored_total: int, run: dict[str, Any]) -> None:
        """Stretch the schedules of a run at `step` to the new `train.total_steps`; a finished
        run is refused with the command that continues it with fresh schedules."""
        total = self.cfg.train.total_steps
        if step >= stored_total:
            run_dir = shlex.quote(str(self.run_dir))
            export = self.run_dir / EXPORT_NAME
            first = (
                ""
                if export.exists()
                else f"export it (lincae train --export-only {run_dir}), then "
            )
            data = " ".join(
                f"--data {shlex.quote(str(root))}" for root in run.get("data_roots", [])
            )
            raise LincaeError(
                f"{self.run_dir}: the run finished at step {step} (train.total_steps = "
                f"{stored_total}) and its schedules have ended; to train {total - step} more "
                f"steps with fresh schedules, {first}start a new run from its weights: lincae "
                f"train {shlex.quote(str(self.run_dir / 'config.json'))} {data or '--data FOLDER'} "
                f"--run-dir NEW_RUN_DIR --set train.init_from={shlex.quote(str(export))} "
                f"--set train.total_steps={total - step}"
            )
        if total <= step:
            raise LincaeError(
                f"{self.run_dir}: train.total_steps = {total} is not above the run's step "
                f"{step}; to end the run here, export it with --export-only"
            )
        self.schedule = self.schedule.extended(step, total)
        self.log(
            f"train.total_steps {stored_total} -> {total}: the schedules go on from step {step} "
            f"and end at step {total}"
        )

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
            self.log(f"resumed at step {self.step} from {self.run_dir / CHECKPOINT_NAME}")
        elif cfg.train.init_from:
            self.warm_start(Path(cfg.train.init_from).expanduser())
            self.log(f"initialised from {cfg.train.init_from}")
        roots = self.data_roots or self.run_record.get("data_roots")
        if not roots:
            raise LincaeError(
                "--data is required: this run's checkpoint does not record its data (it was "
                "written by an older lincae)"
                if self.step
                else _DATA_REQUIRED
            )
        with warnings.catch_warnings():
            if not self.main:  # skipped files are reported once, by rank 0
                warnings.simplefilter("ignore")
            self.data = load_datasets(
                roots,
                self.model.config.sample_rate,
                crop_samples(self.model, cfg.data.crop_frames),
                cfg.data.rms_threshold,
                cfg.data.valid_fraction,
                cfg.train.seed,
            )
        if cfg.data.on_device:
            assert isinstance(self.data.train, CropSampler)
            self.data.train = DeviceCropSampler(self.data.train, self.device)
        self.run_record.update(data_roots=[absolute_root(r) for r in roots])
        self.run_record.update(data=self.data.description)
        if self.main:
            self._warn_at_start()
            text = json.dumps(cfg.to_dict(), indent=2)
            atomic_write_bytes(self.run_dir / "config.json", text.encode())

    def _warn_at_start(self) -> None:
        """Settings that make a run pointless or unchecked, said before its first step."""
        t = self.cfg.train
        if t.warmup_steps >= t.total_steps:
            warnings.warn(
                f"train.warmup_steps ({t.warmup_steps}) is not below train.total_steps "
                f"({t.total_steps}): the learning rate only warms up and never decays",
                stacklevel=3,
            )
        assert self.data is not None
        clips = self.validation_clips()
        if len(self.data.valid.names) == 0:
            warnings.warn(
                "the validation split is empty, so this run is never validated (put files in a "
                "valid/ subfolder of --data, or raise data.valid_fraction)",
                stacklevel=3,
            )
        elif clips.shape[0] < 2:
            warnings.warn(
                f"{clips.shape[0]} validation clip(s) of data.valid_seconds = "
                f"{self.cfg.data.valid_seconds:g} s, and validation needs two: this run is never "
                "validated (add validation files at least that long, or lower data.valid_seconds)",
                stacklevel=3,
            )

    def validation_clips(self) -> torch.Tensor:
        """The validation clips `[n, samples]`, the same at every validation (picked once)."""
        assert self.data is not None
        if self.valid_clips is None:
            data = self.cfg.data
            layout = clip_layout(data.valid_seconds, self.model.config)
            clips = validation_clips(
                self.data.valid, data.valid_clips, layout.samples, data.valid_seed
            )
            self.valid_clips = torch.from_numpy(clips)
        return self.valid_clips

    def local_batch(self, step: int) -> torch.Tensor:
        assert self.data is not None
        per_rank = self.cfg.train.batch_size // self.shard.world_size
        first = self.shard.rank * per_rank
        crops = self.data.train.batch(step, range(first, first + per_rank))
        return torch.as_tensor(crops).to(self.device)  # numpy, or already there (on_device)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        step = self.step
        lr = learning_rate(step, cfg, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        audio = self.local_batch(step)
        inputs = draw_step_inputs(
            audio, step, self.shard.rank, cfg, self.model, self.index_weights, self.schedule
        )
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
        progress = self.schedule.progress(step)
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
        unfinished = self.step < self.cfg.train.total_steps
        self.log(
            f"{'interrupted' if interrupted else 'stopped'} at step {self.step}/"
            f"{self.cfg.train.total_steps} after {elapsed:.0f} s; checkpoint in {self.run_dir}"
            + (
                f"; continue with: lincae train --resume {shlex.quote(str(self.run_dir))}"
                if unfinished
                else ""
            )
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
        x = self.validation_clips()
        if x.shape[0] < 2:
            return None
        model = self.ema_model()
        layout = clip_layout(self.cfg.data.valid_seconds, model.config)
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
        name = export_name(self.cfg.name, self.run_dir)
        path = export_model(
            self.run_dir, self.model, self.ema, name, export_provenance(self.state())
        )
        self.log(f"exported EMA weights to {path}")
        return path


def absolute_root(root: Path | str) -> str:
    """A `--data` root as recorded for a resume from anywhere: an absolute path (musdb: kept)."""
    text = str(root)
    if text.startswith(MUSDB_PREFIX):
        return MUSDB_PREFIX + str(Path(text[len(MUSDB_PREFIX) :]).expanduser().absolute())
    return str(Path(text).expanduser().absolute())


def export_name(preset: str, run_dir: Path) -> str:
    """The model name an export records: the run's, ``<preset>-<run folder>``, never a shipped
    model's, so that decoding a .lat encoded with it never picks the shipped model of the same
    preset (it asks for --model RUN_DIR/model.safetensors instead)."""
    from lincae_cli.hub.registry import REGISTRY

    name = f"{preset}-{run_dir.resolve().name}"
    return name if name not in REGISTRY else f"{name}-run"


def export_only(run_dir: Path, log=print, config: TrainConfig | None = None) -> Path:
    """Export the EMA weights of the checkpoint in `run_dir` without training. The provenance
    is the training's (command, data, precision, commit), plus `re_export`: what this did.
    `config` stands in for a recorded config this lincae cannot load."""
    state = load_checkpoint(run_dir)
    if state is None:
        raise LincaeError(f"{run_dir}: no checkpoint to export (train first)")
    try:
        stored = stored_config(state, run_dir / CHECKPOINT_NAME)
    except LincaeError:
        if config is None:
            raise
        stored = config
    # The checkpoint's own model config, so that the weights fit whatever config was passed.
    model = ConsistencyAutoencoder(stored.model.build())
    provenance = export_provenance(state)
    if not recorded_run(state):
        provenance.update(earlier_export_provenance(run_dir))
    provenance["re_export"] = {
        "command": shlex.join(sys.argv),
        "with": f"lincae {lincae_cli.__version__}",
        "commit": git_commit(),
    }
    path = export_model(run_dir, model, state["ema"], export_name(stored.name, run_dir), provenance)
    log(f"exported EMA weights of step {state['step']} to {path}")
    return path
