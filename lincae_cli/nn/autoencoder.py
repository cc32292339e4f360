"""ConsistencyAutoencoder: encode audio to latents, decode latents with a consistency model.

Latents seen by users are `scale_factor · Enc(x)`; decoding divides by it again. Decoding starts
from `decoding_noise`, drawn per latent frame from the seed, so the same latents and seed give
the same audio however they are chunked or batched.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator

import torch
from torch import nn

from lincae_cli.nn.config import ModelConfig
from lincae_cli.nn.frontend import SpectralFrontend, num_frames, num_samples_for_frames
from lincae_cli.nn.unet import Encoder, Generator, LatentPyramid


def karras_sigma(index: int, count: int, config: ModelConfig) -> float:
    """Noise level of step `index` in 1..count of the rho-spaced schedule (1 -> sigma_min)."""
    lo = config.sigma_min ** (1.0 / config.rho)
    hi = config.sigma_max ** (1.0 / config.rho)
    return (lo + (index - 1) / (count - 1) * (hi - lo)) ** config.rho


# Precision names and the autocast dtype each runs (None: plain fp32).
SILENCE_FRAMES = 108  # latent frames of silence `silence_latent` encodes (10 s at 44.1 kHz)
PRECISION_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def decoding_noise(config: ModelConfig, seed: int, start_frame: int, frames: int) -> torch.Tensor:
    """Unit-variance initial decoding noise ``[2, freq_bins, frames·frames_per_latent]`` of
    latent frames ``[start_frame, start_frame + frames)`` (``start_frame`` may be negative).

    Each latent frame's noise comes from its own generator, seeded by (seed, absolute frame
    index): the noise under a frame does not depend on how the latents were chunked or batched,
    nor on which file they are in. The one decoding-noise scheme of lincae (the engine, the
    evaluation and the trainer's validation all draw from it).
    """
    per_frame = (2, config.freq_bins, config.frames_per_latent)
    generator = torch.Generator()
    pieces = []
    for frame in range(start_frame, start_frame + frames):
        generator.manual_seed(_frame_seed(seed, frame))
        pieces.append(torch.randn(per_frame, generator=generator))
    return torch.cat(pieces, dim=-1)


def _frame_seed(seed: int, frame: int) -> int:
    digest = hashlib.blake2b(struct.pack("<qq", seed, frame), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def as_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
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
        # The affine term b (see `silence_latent`) and whether latent operations should
        # correct for it by default; model files record both (hub/store.py).
        self.silence_latent_values: list[float] | None = None
        self.affine_default = False
        # Whether decoding brings the output to the loudness a .lat records, unless told
        # otherwise: measured per model by `lincae eval` (hub/store.py, docs/metrics.md).
        self.restore_loudness = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def precision_name(self) -> str:
        """The name of the precision encode/decode run at (see `PRECISION_DTYPES`)."""
        return next(name for name, dtype in PRECISION_DTYPES.items() if dtype == self.precision)

    def set_precision(self, precision: str) -> None:
        """'fp32', 'bf16' or 'fp16': autocast dtype used by encode/decode (engine/device.py
        says what 'auto' means where). The STFT frontend always runs in fp32."""
        if precision not in PRECISION_DTYPES:
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
        self.precision = PRECISION_DTYPES[precision]

    def optimize_for_inference(self, precision: str = "fp32") -> ConsistencyAutoencoder:
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

    def encode_representation(
        self, rep: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unscaled latents `[batch, C, frames']` of a representation `[batch, 2, F, frames]`
        of which the first ``valid`` frames (`[batch]`; None: all) are real."""
        with self._autocast():
            return self.encoder(self._layout(rep), valid).float()

    def encode(self, audio: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Audio `[batch, samples]` at the model rate -> scaled latents `[batch, C, frames']`,
        with `latent_frames(samples)` frames, as the reference packages compute them.

        ``valid`` (`[batch]`, None: all) counts the real STFT frames of each example: the rest
        is padding, and the first ceil(valid / 2^d) latent frames come out as if the audio
        stopped there (padding-exact execution). Without ``valid``, a model whose
        ``latent_frame_rounding`` is "floor" leaves out the STFT frames after the last whole
        latent frame (music2latent's crop).
        """
        if valid is None and self.config.latent_frame_rounding == "floor":
            frames = self.latent_frames(audio.shape[-1]) * self.config.frames_per_latent
            audio = audio[..., : num_samples_for_frames(frames, self.config.hop, self.config.n_fft)]
        rep = self.frontend.to_representation(audio)
        return self.encode_representation(rep, valid) * self.config.scale_factor

    def silence_latent(self, frames: int = SILENCE_FRAMES) -> torch.Tensor:
        """``b = Enc(silence)``: the scaled latent frame `[C]` of digital silence, the constant
        term of an encoder that is at best affine, ``Enc(x) = L·x + b``.

        Normalisation over time makes the frames of a silence differ near its ends; ``b`` is
        the middle frame of ``frames`` frames of zeros (the default: a 10-s window, as the
        engine encodes), in fp32. Kept in `silence_latent_values` once computed or read from
        a model file (hub/silence.py caches it per model).
        """
        if self.silence_latent_values is None:
            samples = (frames * self.config.frames_per_latent - 1) * self.config.hop
            zeros = torch.zeros(1, samples + self.config.n_fft, device=self.device)
            precision, self.precision = self.precision, None  # fp32, whatever encodes run at
            try:
                with torch.inference_mode():
                    frame = self.encode(zeros)[0, :, frames // 2]
            finally:
                self.precision = precision
            self.silence_latent_values = [float(value) for value in frame.cpu()]
        return torch.tensor(self.silence_latent_values, dtype=torch.float32)

    # -- decoding ---------------------------------------------------------------------------

    def denoise(
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor | float,
        pyramid: list[torch.Tensor],
        valids: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """One application of the consistency function (fp32 output)."""
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=noisy.device)
        with self._autocast():
            return self.unet(self._layout(noisy), sigma_t, pyramid, valids)

    def decode_representation(
        self,
        latents: torch.Tensor,
        steps: int = 1,
        seed: int = 0,
        initial_noise: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled latents `[batch, C, L]` -> representation `[batch, 2, F, L·2^d]`.

        `steps` consistency steps from sigma_max. The initial noise is `initial_noise` (already
        multiplied by sigma_max) or else `decoding_noise` of frames `[0, L)` under `seed`, the
        same for every example; the noise of later steps comes from a generator seeded by `seed`.
        ``valid`` (`[batch]`, None: all) counts the real latent frames of each example: the
        representation of the first valid·2^d frames comes out as if the latents stopped there,
        and the frames after them are zero.
        """
        if steps < 1:
            raise ValueError("steps must be at least 1")
        config = self.config
        raw = latents.float() / config.scale_factor
        if initial_noise is None:
            noise = decoding_noise(config, seed, 0, latents.shape[-1]).to(latents.device)
            initial_noise = (noise * config.sigma_max).expand(latents.shape[0], *noise.shape)
        generator = as_generator(seed, latents.device) if steps > 1 else None
        with self._autocast():
            pyramid, valids = self.pyramid(raw, valid)
        x = initial_noise.float()
        for k in range(steps):
            sigma = karras_sigma(steps + 1 - k, steps + 1, config)
            denoised = self.denoise(x, sigma, pyramid, valids)
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
        seed: int = 0,
        initial_noise: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled latents `[batch, C, L]` -> audio `[batch, (L·2^d - 1)·hop + n_fft]`; with
        ``valid`` real latent frames, the first (valid·2^d - 1)·hop + n_fft samples are what
        decoding those frames alone gives, and the rest is silence."""
        rep = self.decode_representation(latents, steps, seed, initial_noise, valid)
        audio = self.frontend.to_waveform(rep)
        if self.config.clamp_output:
            audio = audio.clamp(-1.0, 1.0)
        return audio

    def latent_frames(self, num_samples: int) -> int:
        """Latent frames `encode` gives for `num_samples` samples: the strided convolutions'
        rounding (ceil), or for a "floor" model the whole groups of 2^d STFT frames (at least
        one). latents/framing.py states the same rule for `.lat` files."""
        frames = num_frames(num_samples, self.config.hop, self.config.n_fft)
        if self.config.latent_frame_rounding == "floor":
            return max(1, frames // self.config.frames_per_latent)
        for _ in range(self.config.time_downsamples):
            frames = (frames - 1) // 2 + 1
        return frames
