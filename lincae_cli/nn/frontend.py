"""Complex STFT representation of Music2Latent / Lin-CAE, and its inverse.

Audio `[batch, samples]` becomes `[batch, 2, 2·hop, frames]`: real and imaginary parts of a
Hann-windowed STFT (n_fft = n_fft_factor·hop, frames not centred, the Nyquist bin dropped)
whose magnitudes are compressed to beta·|X|^alpha with the phase kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lincae_cli.nn.config import ModelConfig


def num_frames(num_samples: int, hop: int, n_fft: int) -> int:
    """STFT frames of an uncentred transform of `num_samples` samples."""
    return max(0, (num_samples - n_fft) // hop + 1)


def num_samples_for_frames(frames: int, hop: int, n_fft: int) -> int:
    """Samples produced by overlap-adding `frames` frames."""
    return (frames - 1) * hop + n_fft


class SpectralFrontend(nn.Module):
    """Waveform <-> compressed complex spectrogram, as configured by a ModelConfig."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.hop = config.hop
        self.n_fft = config.n_fft
        self.freq_bins = config.freq_bins
        self.alpha = config.alpha
        self.beta = config.beta
        window = torch.hann_window(self.n_fft, dtype=torch.float64)
        # Synthesis window: analysis window divided by the steady-state sum of squared windows
        # overlapping each sample, so that overlap-add inverts the analysis in the interior.
        overlaps = -(-self.n_fft // self.hop)
        squares = F.pad(window**2, (0, overlaps * self.hop - self.n_fft))
        envelope = squares.reshape(overlaps, self.hop).sum(0).repeat(overlaps)[: self.n_fft]
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("synthesis_window", (window / envelope).float(), persistent=False)

    def to_representation(self, audio: torch.Tensor) -> torch.Tensor:
        """`[batch, samples]` float audio -> `[batch, 2, 2·hop, frames]`."""
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        spec = torch.stft(
            audio.float(),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=False,
            return_complex=True,
        )[:, : self.freq_bins, :]
        magnitude = spec.abs()
        compressed = self.beta * magnitude.pow(self.alpha)
        phase = torch.angle(spec)
        return torch.stack((compressed * torch.cos(phase), compressed * torch.sin(phase)), dim=1)

    def to_waveform(self, representation: torch.Tensor) -> torch.Tensor:
        """`[batch, 2, 2·hop, frames]` -> `[batch, (frames-1)·hop + n_fft]` float32 audio."""
        rep = representation.float()
        real, imag = rep[:, 0], rep[:, 1]
        compressed = torch.sqrt(real * real + imag * imag)
        magnitude = (compressed / self.beta).pow(1.0 / self.alpha)
        phase = torch.atan2(imag, real)
        spec = torch.polar(magnitude, phase)
        spec = F.pad(spec, (0, 0, 0, 1))  # restore the (zero) Nyquist bin
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.synthesis_window[:, None]
        count = frames.shape[-1]
        length = num_samples_for_frames(count, self.hop, self.n_fft)
        audio = F.fold(
            frames, output_size=(1, length), kernel_size=(1, self.n_fft), stride=(1, self.hop)
        )
        return audio.reshape(frames.shape[0], length)
