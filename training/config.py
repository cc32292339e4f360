"""TrainConfig: a TOML file of sections (or a run's recorded `config.json`), with
`--set section.key=value` overrides.

Every schedule (learning rate, consistency step, gain annealing) follows `train.total_steps`, so
pausing with `--steps N` and resuming never changes the result. A resumed run may change only
`RESUMABLE_KEYS`; raising `train.total_steps` stretches the schedules from the step reached
(training/schedule.py).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lincae_cli.errors import LincaeError
from lincae_cli.nn.config import ModelConfig, preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelSection:
    """`preset` picks a ModelConfig preset; other keys override its fields."""

    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ModelConfig:
        base = preset(self.preset)
        try:
            return ModelConfig.from_dict({**base.to_dict(), **self.overrides})
        except TypeError as exc:
            raise LincaeError(f"invalid [model] setting: {exc}") from None


@dataclass
class TrainSection:
    total_steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-4
    lr_min: float = 1e-6
    warmup_steps: int = 500
    ema_decay: float = 0.999
    ema_every: int = 1
    checkpoint_every: int = 500
    log_every: int = 25
    validate_every: int = 2000
    seed: int = 0
    # auto (bf16 where native, else fp32) | fp32 | bf16 | fp16 (CUDA only, dynamic loss scale)
    precision: str = "auto"
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 = all cores
    tensorboard: bool = False  # also write the metrics to RUN_DIR/tensorboard (needs tensorboard)
    # Warm start: a model.safetensors (e.g. an earlier run's export) whose weights initialise
    # the model and its EMA; optimiser and schedules start fresh. Empty = random init.
    init_from: str = ""


@dataclass
class ConsistencySection:
    base_step: float = 0.1
    start_exp: float = 1.0
    end_exp: float = 2.0
    p_mean: float = -1.1
    p_std: float = 2.0
    index_grid: int = 10000
    huber_c_per_sqrt_dim: float = 0.00054


@dataclass
class AugmentSection:
    """Lin-CAE's linearity augmentation; all off gives the Music2Latent baseline."""

    gain: bool = True
    gain_prob: float = 0.8
    gain_max: float = 3.0
    gain_zero_below: float = 0.05
    negative_gains: bool = False
    anneal_hold: float = 0.2
    anneal_end: float = 0.9
    additivity: bool = True
    mix_weight_min: float = 0.5


@dataclass
class DataSection:
    crop_frames: int = 64
    rms_threshold: float = 0.001
    valid_fraction: float = 0.05
    valid_clips: int = 16
    valid_seconds: float = 3.0
    # Picks the validation clips; apart from train.seed, so that runs with other seeds (or the
    # stages of one model) validate on the same clips and their numbers compare.
    valid_seed: int = 0
    # Hold the decoded training audio on the training device and cut each step's crops there
    # (and draw its noise there): no per-step host work or copies on a GPU. Other crops than
    # the CPU sampler's, so not a setting a run may change on resume.
    on_device: bool = False


# Counts and periods the loop divides by or takes a modulo of.
_POSITIVE_KEYS = (
    "train.total_steps",
    "train.batch_size",
    "train.ema_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.validate_every",
    "data.crop_frames",
)


# What a resumed run may change: settings of the machine and of logging, not of the optimisation
# (e.g. more threads once a core frees up), and the length of the run, whose schedules are then
# stretched from the step reached. Everything else would change the run's path mid-way.
RESUMABLE_KEYS = (
    "train.total_steps",
    "train.threads",
    "train.log_every",
    "train.checkpoint_every",
    "train.validate_every",
    "train.compile",
    "train.tensorboard",
)


@dataclass
class TrainConfig:
    name: str = "lincae-small"
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    consistency: ConsistencySection = field(default_factory=ConsistencySection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    data: DataSection = field(default_factory=DataSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = cls()
        for key, value in data.items():
            if key == "name":
                config.name = str(value)
                continue
            if key == "model":
                if not isinstance(value, dict):
                    raise LincaeError("[model] must be a table")
                model_values = dict(value)
                overrides = dict(model_values.pop("overrides", {}))
                config.model.preset = str(model_values.pop("preset", config.model.preset))
                overrides.update(model_values)
                config.model.overrides = overrides
                continue
            section = getattr(config, key, None)
            if not dataclasses.is_dataclass(section) or not isinstance(value, dict):
                raise LincaeError(f"unknown config section '{key}'")
            for sub, sub_value in value.items():
                _set_field(section, key, sub, sub_value)
        config.validate()
        return config

    def validate(self) -> None:
        """Fail early, naming the key, on values the trainer would only trip over later."""
        model = self.model.build()
        for dotted in _POSITIVE_KEYS:
            section, key = dotted.split(".")
            if getattr(getattr(self, section), key) < 1:
                raise LincaeError(f"config key '{dotted}' must be at least 1")
        if not self.data.valid_seconds > 0:
            raise LincaeError(
                f"config key 'data.valid_seconds' must be positive, not {self.data.valid_seconds}"
            )
        if self.data.crop_frames % model.frames_per_latent:
            raise LincaeError(
                f"config key 'data.crop_frames' must be a multiple of {model.frames_per_latent} "
                f"(STFT frames per latent frame), not {self.data.crop_frames}"
            )

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """A TOML config, or the `config.json` a run records (`*.json`), with `overrides`."""
        path = Path(path)
        if path.is_dir():
            raise LincaeError(f"{path}: a folder, not a config file (TOML, or a run's config.json)")
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise LincaeError(f"{path}: config file not found") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LincaeError(f"{path}: invalid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise LincaeError(f"{path}: not a training config (a JSON object of sections)")
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise LincaeError(f"{path}: invalid TOML ({exc})") from None
        return cls.from_dict(_overridden(data, overrides))

    def with_overrides(self, overrides: list[str] | None) -> TrainConfig:
        """This config with `section.key=value` overrides applied (a new config)."""
        return TrainConfig.from_dict(_overridden(self.to_dict(), overrides))

    def changes_from(self, stored: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """`{"section.key" (or "name"): (value in stored, value here)}` where this config
        differs from `stored`, the `to_dict()` of another. A key `stored` lacks (older than the
        key) counts as its default; a `[model]` key not set is None (the preset's value)."""
        current, defaults = self.to_dict(), TrainConfig().to_dict()
        pairs = {"name": (stored.get("name"), current["name"])}
        model, stored_model = _flat_model(current["model"]), _flat_model(stored.get("model", {}))
        for key in model.keys() | stored_model.keys():
            pairs[f"model.{key}"] = (stored_model.get(key), model.get(key))
        for section, values in current.items():
            if isinstance(values, dict) and section != "model":
                old = stored.get(section, {})
                for key, value in values.items():
                    pairs[f"{section}.{key}"] = (old.get(key, defaults[section][key]), value)
        return {key: pair for key, pair in sorted(pairs.items()) if pair[0] != pair[1]}


def _set_field(section: Any, section_name: str, key: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise LincaeError(
            f"unknown config key '{section_name}.{key}' "
            f"(known in [{section_name}]: {', '.join(sorted(fields))})"
        )
    current = getattr(section, key)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise LincaeError(f"config key '{section_name}.{key}' must be true or false")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LincaeError(f"config key '{section_name}.{key}' must be a number")
        value = type(current)(value)
    setattr(section, key, value)


def _flat_model(section: dict[str, Any]) -> dict[str, Any]:
    """`[model]` as written (`preset` plus the keys it overrides), one level deep."""
    return {"preset": section.get("preset", ModelSection.preset), **section.get("overrides", {})}


def _overridden(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for item in overrides or []:
        _apply_override(data, item)
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    """`section.key=value` (value parsed as TOML, else taken as a string)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise LincaeError(f"--set expects section.key=value, got '{item}'")
    dotted, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *path, key = dotted.strip().split(".")
    node = data
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise LincaeError(f"--set {dotted}: '{part}' is not a section")
    node[key] = value
