"""ConsistencyAutoencoder: encode audio to latents, decode latents with a consistency model.

Latents seen by users are `scale_factor · Enc(x)`; decoding divides by it again. Decoding draws
its initial noise from a seeded generator, so the same latent and seed give the same audio.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lincae_cli.nn.config import ModelConfig
from lincae_cli.nn.frontend import SpectralFrontend, num_frames
from lincae_cli.nn.unet import Encoder, Generator, LatentPyramid


def karras_sigma(index: int, count: int, config: ModelConfig) -> float:
    """Noise level of step `index` in 1..count of the rho-spaced schedule (1 -> sigma_min)."""
    lo = config.sigma_min ** (1.0 / config.rho)
    hi = config.sigma_max ** (1.0 / config.rho)
    return (lo + (index - 1) / (count - 1) * (hi - lo)) ** config.rho


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix maths is native here (CUDA with bf16, or a CPU with AVX-512 BF16 /
    AMX), so that autocast to bf16 is a speed-up rather than an emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Precision names and the autocast dtype each runs (None: plain fp32).
PRECISION_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def auto_precision(device: torch.device) -> str:
    """What precision 'auto' means on `device`: bf16 where it is native, else fp32."""
    return "bf16" if native_bf16(device) else "fp32"


def as_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    return generator


class ConsistencyAutoencoder(nn.Module):
    """Encoder + latent pyramid + generator, with the frontend that frames them in audio."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = SpectralFrontend(config)
        self.encoder = Encoder(config)
        self.pyramid = LatentPyramid(config)
        self.unet = Generator(config)
        self.precision: torch.dtype | None = None
        self.channels_last = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_precision(self, precision: str) -> None:
        """'fp32', 'bf16' or 'fp16' (or 'auto': bf16 where the hardware runs it natively, else
        fp32): autocast dtype used by encode/decode. The STFT frontend always runs in fp32."""
        if precision == "auto":
            precision = auto_precision(self.device)
        if precision not in PRECISION_DTYPES:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        self.precision = PRECISION_DTYPES[precision]

    def optimize_for_inference(self, precision: str = "auto") -> ConsistencyAutoencoder:
        """Eval mode, NHWC memory layout (faster oneDNN/cuDNN convolutions) and `precision`."""
        self.eval()
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        self.set_precision(precision)
        return self

    def _layout(self, rep: torch.Tensor) -> torch.Tensor:
        return rep.contiguous(memory_format=torch.channels_last) if self.channels_last else rep

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.precision):
            yield

    # -- encoding ---------------------------------------------------------------------------

    def encode_representation(self, rep: torch.Tensor) -> torch.Tensor:
        """Unscaled latents `[batch, C, frames']` of a representation `[batch, 2, F, frames]`."""
        with self._autocast():
            return self.encoder(self._layout(rep)).float()

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio `[batch, samples]` at the model rate -> scaled latents `[batch, C, frames']`.

        The STFT frame count must be a multiple of `frames_per_latent` for every frame to count;
        the inference engine pads audio so that it is.
        """
        rep = self.frontend.to_representation(audio)
        return self.encode_representation(rep) * self.config.scale_factor

    # -- decoding ---------------------------------------------------------------------------

    def denoise(
        self, noisy: torch.Tensor, sigma: torch.Tensor | float, pyramid: list[torch.Tensor]
    ) -> torch.Tensor:
        """One application of the consistency function (fp32 output)."""
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=noisy.device)
        with self._autocast():
            return self.unet(self._layout(noisy), sigma_t, pyramid)

    def decode_representation(
        self,
        latents: torch.Tensor,
        steps: int = 1,
        seed: int | torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled latents `[batch, C, L]` -> representation `[batch, 2, F, L·2^d]`.

        `steps` consistency steps from sigma_max; noise comes from `seed` (an int or a
        torch.Generator) unless `initial_noise` (already multiplied by sigma_max) is given.
        """
        if steps < 1:
            raise ValueError("steps must be at least 1")
        config = self.config
        raw = latents.float() / config.scale_factor
        generator = (
            as_generator(seed, latents.device) if initial_noise is None or steps > 1 else None
        )
        shape = (
            latents.shape[0],
            2,
            config.freq_bins,
            latents.shape[-1] * config.frames_per_latent,
        )
        if initial_noise is None:
            noise = torch.randn(shape, generator=generator, device=latents.device)
            initial_noise = noise * config.sigma_max
        with self._autocast():
            pyramid = self.pyramid(raw)
        x = initial_noise.float()
        for k in range(steps):
            sigma = karras_sigma(steps + 1 - k, steps + 1, config)
            denoised = self.denoise(x, sigma, pyramid)
            if k == steps - 1:
                return denoised
            next_sigma = karras_sigma(steps - k, steps + 1, config)
            noise = torch.randn(denoised.shape, generator=generator, device=denoised.device)
            x = denoised + (next_sigma**2 - config.sigma_min**2) ** 0.5 * noise
        raise AssertionError("unreachable")

    def decode(
        self,
        latents: torch.Tensor,
        steps: int = 1,
        seed: int | torch.Generator | None = None,
        initial_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled latents `[batch, C, L]` -> audio `[batch, (L·2^d - 1)·hop + n_fft]`."""
        rep = self.decode_representation(latents, steps, seed, initial_noise)
        audio = self.frontend.to_waveform(rep)
        if self.config.clamp_output:
            audio = audio.clamp(-1.0, 1.0)
        return audio

    def latent_frames(self, num_samples: int) -> int:
        """Latent frames the encoder produces for `num_samples` samples (strided-conv rounding)."""
        frames = num_frames(num_samples, self.config.hop, self.config.n_fft)
        for _ in range(self.config.time_downsamples):
            frames = (frames - 1) // 2 + 1
        return frames
