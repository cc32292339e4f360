"""ModelConfig: every hyper-parameter of the consistency autoencoder, and presets.

One architecture serves the published Music2Latent / Lin-CAE checkpoints, our shipped
models and training; only this config changes between them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from lincae_cli.errors import LincaeError

LATENT_FRAME_ROUNDINGS = ("ceil", "floor")
"""Values of `ModelConfig.latent_frame_rounding`."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a consistency autoencoder.

    Names follow the published generator configs where one exists (see `from_published`).
    """

    # Frontend: complex STFT with amplitude compression beta·|X|^alpha.
    sample_rate: int = 44100
    hop: int = 512
    n_fft_factor: int = 4
    alpha: float = 0.65
    beta: float = 0.34
    # Generator U-Net.
    base_channels: int = 64
    layers: tuple[int, ...] = (2, 2, 2, 2, 2)
    multipliers: tuple[int, ...] = (1, 2, 4, 4, 4)
    attention: tuple[int, ...] = (0, 0, 1, 1, 1)
    # Per level transition: 1 = frequency-only 4x downsampling, 0 = 2x in frequency and time.
    freq_downsample: tuple[int, ...] = (1, 0, 0, 0)
    # Encoder and latent pyramid decoder.
    encoder_layers: tuple[int, ...] = (1, 1, 1, 1, 1)
    encoder_attention: tuple[int, ...] = (0, 0, 1, 1, 1)
    bottleneck_base_channels: int = 512
    num_bottleneck_layers: int = 4
    latent_channels: int = 64
    cond_channels: int = 256
    heads: int = 4
    use_fourier: bool = False
    fourier_scale: float = 0.2
    frequency_scaling: bool = True
    pre_normalize_downsampling_encoder: bool = True
    pre_normalize_2d_to_1d: bool = True
    # Consistency model (EDM-style preconditioning).
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    # Latents exposed to users are encoder outputs multiplied by this factor.
    scale_factor: float = 1.0
    # Music2Latent clamps decoded audio to [-1, 1]; linear models must not (clipping breaks gain).
    clamp_output: bool = False
    # The published encoder and latent pyramid always use 4 heads, whatever `heads` says.
    encoder_heads: int = 4
    # Latent frames of F STFT frames, 2^d per latent frame: "ceil" = ceil(F / 2^d), the last
    # frame padded (linear-cae, our models); "floor" = floor(F / 2^d), the STFT frames after
    # the last whole group cropped, as music2latent's inference does (latents/framing.py).
    latent_frame_rounding: str = "ceil"

    def __post_init__(self) -> None:
        levels = len(self.layers)
        problems = []
        for name in ("multipliers", "attention", "encoder_layers", "encoder_attention"):
            if len(getattr(self, name)) != levels:
                problems.append(f"{name} has {len(getattr(self, name))} entries, expected {levels}")
        if len(self.freq_downsample) != levels - 1:
            problems.append(f"freq_downsample needs {levels - 1} entries")
        if self.freq_bins % (4 ** self.freq_downsample.count(1) * 2**self.time_downsamples):
            problems.append("2*hop is not divisible by the total frequency downsampling")
        for name in ("base_channels", "bottleneck_base_channels", "cond_channels"):
            if getattr(self, name) < 4:
                problems.append(f"{name} must be at least 4")
        if self.latent_frame_rounding not in LATENT_FRAME_ROUNDINGS:
            problems.append(
                f"latent_frame_rounding must be one of {', '.join(LATENT_FRAME_ROUNDINGS)}, "
                f"not {self.latent_frame_rounding!r}"
            )
        if problems:
            raise LincaeError("invalid model config: " + "; ".join(problems))

    @property
    def n_fft(self) -> int:
        return self.hop * self.n_fft_factor

    @property
    def freq_bins(self) -> int:
        """Frequency bins of the representation (the Nyquist bin is dropped)."""
        return 2 * self.hop

    @property
    def time_downsamples(self) -> int:
        return self.freq_downsample.count(0)

    @property
    def frames_per_latent(self) -> int:
        """STFT frames per latent frame."""
        return 2**self.time_downsamples

    @property
    def latent_hop_samples(self) -> int:
        """Audio samples per latent frame (4096 for the published models)."""
        return self.hop * self.frames_per_latent

    @property
    def latent_rate_hz(self) -> float:
        return self.sample_rate / self.latent_hop_samples

    @property
    def bottleneck_freq_bins(self) -> int:
        return self.freq_bins // (4 ** self.freq_downsample.count(1)) // (2**self.time_downsamples)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise LincaeError(f"unknown model config keys: {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_published(
        cls,
        frontend: dict[str, Any],
        generator: dict[str, Any],
        diffusion: dict[str, Any] | None = None,
        scale_factor: float = 1.0,
        clamp_output: bool = False,
    ) -> ModelConfig:
        """Build a config from linear-cae's frontend/generator/diffusion kwargs (YAML files)."""
        diffusion = diffusion or {}
        g = generator
        unsupported = {
            "bottleneck_layers": None,
            "normalization": True,
            "dropout_rate": 0.0,
            "init_as_zero": True,
            "padding_mode": "zeros",
            "data_channels": 2,
        }
        for key, supported in unsupported.items():
            value = g.get(key, supported)
            if key == "dropout_rate":
                continue  # dropout does not change inference
            if key == "init_as_zero":
                continue  # only an initialisation choice
            if value != supported:
                raise LincaeError(f"published generator setting {key}={value!r} is not supported")
        if int(g.get("hop", frontend.get("hop_size", 512))) != int(frontend.get("hop_size", 512)):
            raise LincaeError("generator hop and frontend hop_size differ")
        sample_rate = frontend.get("sample_rate") or 44100
        return cls(
            sample_rate=int(sample_rate),
            hop=int(frontend.get("hop_size", 512)),
            n_fft_factor=int(frontend.get("n_fft_factor", 4)),
            alpha=float(frontend.get("alpha_rescale", 0.65)),
            beta=float(frontend.get("beta_rescale", 0.34)),
            base_channels=int(g.get("base_channels", 64)),
            layers=tuple(g.get("layers_list", (2, 2, 2, 2, 2))),
            multipliers=tuple(g.get("multipliers_list", (1, 2, 4, 4, 4))),
            attention=tuple(g.get("attention_list", (0, 0, 1, 1, 1))),
            freq_downsample=tuple(g.get("freq_downsample_list", (1, 0, 0, 0))),
            encoder_layers=tuple(g.get("layers_list_encoder", (1, 1, 1, 1, 1))),
            encoder_attention=tuple(g.get("attention_list_encoder", (0, 0, 1, 1, 1))),
            bottleneck_base_channels=int(g.get("bottleneck_base_channels", 512)),
            num_bottleneck_layers=int(g.get("num_bottleneck_layers", 4)),
            latent_channels=int(g.get("bottleneck_channels", 64)),
            cond_channels=int(g.get("cond_channels", 256)),
            heads=int(g.get("heads", 4)),
            use_fourier=bool(g.get("use_fourier", False)),
            fourier_scale=float(g.get("fourier_scale", 0.2)),
            frequency_scaling=bool(g.get("frequency_scaling", True)),
            pre_normalize_downsampling_encoder=bool(
                g.get("pre_normalize_downsampling_encoder", True)
            ),
            pre_normalize_2d_to_1d=bool(g.get("pre_normalize_2d_to_1d", True)),
            sigma_min=float(g.get("sigma_min", diffusion.get("sigma_min", 0.002))),
            sigma_max=float(g.get("sigma_max", diffusion.get("sigma_max", 80.0))),
            sigma_data=float(g.get("sigma_data", diffusion.get("sigma_data", 0.5))),
            rho=float(diffusion.get("rho", 7.0)),
            scale_factor=float(scale_factor),
            clamp_output=clamp_output,
        )


# The published Music2Latent / Lin-CAE size (about 58 M parameters).
PUBLISHED = ModelConfig()

# CPU-sized variants with the same frontend and latent layout (64 channels at 1/4096 of the rate).
PRESETS: dict[str, ModelConfig] = {
    "published": PUBLISHED,
    "small": ModelConfig(
        base_channels=16,
        layers=(1, 1, 1, 1, 1),
        multipliers=(1, 2, 4, 4, 4),
        attention=(0, 0, 0, 1, 1),
        encoder_attention=(0, 0, 0, 1, 1),
        bottleneck_base_channels=128,
        num_bottleneck_layers=2,
        cond_channels=64,
    ),
    "tiny": ModelConfig(
        base_channels=8,
        layers=(1, 1, 1, 1, 1),
        multipliers=(1, 1, 2, 2, 2),
        attention=(0, 0, 0, 0, 1),
        encoder_attention=(0, 0, 0, 0, 1),
        bottleneck_base_channels=32,
        num_bottleneck_layers=1,
        cond_channels=32,
        heads=2,
        encoder_heads=2,
    ),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise LincaeError(
            f"unknown model preset '{name}' (known: {', '.join(sorted(PRESETS))})"
        ) from None
