"""Building blocks: residual blocks, frequency-wise attention, resampling, embeddings.

Feature maps are `[batch, channels, freq, frames]` (2-D blocks) or `[batch, channels, frames]`
(1-D blocks). Parameter names follow the published checkpoint layout so that conversion is a
short list of renames (see `lincae_cli.hub.convert`).

Padding-exact execution: every block takes ``valid``, the number of real frames of each
example (`[batch]`, at the block's own time resolution; None: all of them). Frames from
``valid`` on are padding: normalisation statistics are taken over the real frames only, and
whatever mixes frames in time (a convolution with a time kernel) sees zeros there, as it would
see its own zero padding at the end of an unpadded input. So the real frames come out exactly
as if the padding were not there, whatever else shares the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def zero_padding(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``x`` with its padding frames set to zero, in place (unchanged when ``valid`` is None).

    In place is safe inside the networks: nothing computed at padding frames ever reaches a
    real frame, so no layer needs those values (the encoder copies its caller's input first).
    """
    if valid is not None:
        for example, count in enumerate(valid.tolist()):
            x[example, ..., count:] = 0
    return x


def add_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``x + other``, written into ``x`` where that gives the same result (``x`` is a fresh
    intermediate of the caller, as large as the sum, and keeps its dtype under type
    promotion): one activation less at the peak of a window, the same values."""
    if torch.result_type(x, other) == x.dtype and _broadcasts_into(other.shape, x.shape):
        return x.add_(other)
    return x + other


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` (written out: `torch.broadcast_shapes`
    imports sympy on its first call, a third of a second of every CLI run)."""
    trailing = zip(reversed(shape), reversed(target), strict=False)  # shape may be shorter
    return len(shape) <= len(target) and all(size in (1, wanted) for size, wanted in trailing)


def downsampled(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Real frames after a stride-2 convolution with padding 1: ceil(valid / 2)."""
    return None if valid is None else (valid + 1) // 2


def upsampled(valid: torch.Tensor | None) -> torch.Tensor | None:
    return None if valid is None else valid * 2


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` whose statistics can exclude padding frames (``valid``)."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return super().forward(x)
        # Each example normalised over its real frames alone; its padding frames stay zero.
        out: torch.Tensor | None = None
        layout = _layout_of(x)
        for example, count in enumerate(valid.tolist()):
            # The unmasked kernel, on the real frames in x's layout: the same rounding as an
            # unpadded input gets.
            part = super().forward(
                x[example : example + 1, ..., :count].contiguous(memory_format=layout)
            )
            if out is None:  # the dtype autocast gives group_norm (fp32), x's layout
                out = torch.zeros_like(x, dtype=part.dtype)
            out[example : example + 1, ..., :count] = part
        assert out is not None
        return out


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def group_norm(channels: int) -> GroupNorm:
    return GroupNorm(min(channels // 4, 32), channels)


def zeroed(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters: residual branches start as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class FreqGain(nn.Module):
    """A learned gain per frequency bin."""

    def __init__(self, freq_bins: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 1, freq_bins, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FrequencyAttention(nn.Module):
    """Self-attention along the frequency axis, independently for every frame, plus residual.

    Uses fused scaled-dot-product attention; q, k, v come from one packed projection.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zeroed(nn.Linear(channels, channels))
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 3:
            return self._attend_1d(x, valid)
        batch, channels, freq, frames = x.shape
        h = self.norm(x, valid).permute(0, 3, 2, 1)
        h = self._attend(h.reshape(batch * frames, freq, channels))
        h = h.reshape(batch, frames, freq, channels).permute(0, 3, 2, 1)
        return x + h

    def _attend_1d(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        h = self._attend(self.norm(x, valid).transpose(1, 2))
        return x + h.transpose(1, 2)

    def _attend(self, seq: torch.Tensor) -> torch.Tensor:
        """`[n, length, channels]` -> `[n, length, channels]`."""
        n, length, channels = seq.shape
        q, k, v = (
            self.qkv(seq)
            .reshape(n, length, 3, self.heads, channels // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(attended.transpose(1, 2).reshape(n, length, channels))


class ResBlock(nn.Module):
    """Pre-norm residual block: norm, SiLU, conv, (+ noise embedding), norm, SiLU, conv.

    Optionally followed by frequency attention. 2-D blocks use 3x3 convolutions, 1-D blocks 3-tap.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_channels: int | None = None,
        attention: bool = False,
        heads: int = 4,
        two_d: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if two_d else nn.Conv1d
        self.two_d = two_d
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = zeroed(conv(out_channels, out_channels, 3, padding=1))
        self.res_conv = (
            conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )
        self.proj_emb = zeroed(nn.Linear(cond_channels, out_channels)) if cond_channels else None
        self.att = FrequencyAttention(out_channels, heads) if attention else None

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.conv1(zero_padding(F.silu(self.norm1(x, valid)), valid))
        if emb is not None and self.proj_emb is not None:
            shift = self.proj_emb(emb)
            h = add_(h, shift[:, :, None, None] if self.two_d else shift[:, :, None])
        # One step per line: each intermediate is freed as soon as the next one exists.
        h = self.norm2(h, valid)
        h = F.silu(h)
        h = self.conv2(zero_padding(h, valid))
        x = add_(h, self.res_conv(x))
        if self.att is not None:
            x = self.att(x, valid)
        return x


class Downsample(nn.Module):
    """Strided conv: 4x in frequency only (`freq_only`) or 2x in frequency and time."""

    def __init__(self, in_channels: int, out_channels: int, freq_only: bool, normalize: bool):
        super().__init__()
        self.freq_only = freq_only
        self.norm = group_norm(in_channels) if normalize else None
        if freq_only:
            self.c = nn.Conv2d(in_channels, out_channels, (5, 1), stride=(4, 1), padding=(2, 0))
        else:
            self.c = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid`` counts real input frames; the output has `output_valid(valid)` of them."""
        if self.norm is not None:
            x = self.norm(x, valid)
        return self.c(x if self.freq_only else zero_padding(x, valid))

    def output_valid(self, valid: torch.Tensor | None) -> torch.Tensor | None:
        return valid if self.freq_only else downsampled(valid)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling (4x frequency, or 2x both axes) followed by a conv."""

    def __init__(self, in_channels: int, out_channels: int, freq_only: bool) -> None:
        super().__init__()
        self.freq_only = freq_only
        self.factor = (4, 1) if freq_only else (2, 2)
        kernel, padding = ((5, 1), (2, 0)) if freq_only else (3, 1)
        self.c = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid`` counts real input frames; the output has `output_valid(valid)` of them."""
        if not self.freq_only:
            x = zero_padding(x, valid)
        return self.c(F.interpolate(x, scale_factor=self.factor, mode="nearest"))

    def output_valid(self, valid: torch.Tensor | None) -> torch.Tensor | None:
        return valid if self.freq_only else upsampled(valid)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per example: `[batch]` -> `[batch, size]`."""

    def __init__(self, size: int, max_positions: int = 10000) -> None:
        super().__init__()
        exponents = torch.arange(size // 2, dtype=torch.float32) / (size // 2 - 1)
        self.register_buffer("freqs", (1.0 / max_positions) ** exponents, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float()[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar per example: `[batch]` -> `[batch, size]`."""

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(size // 2) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float()[:, None] * self.W[None, :] * (2.0 * math.pi)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def mlp(channels: int, out_channels: int | None = None) -> nn.Sequential:
    """Two SiLU layers, then (if `out_channels`) a zero-initialised projection."""
    layers: list[nn.Module] = [
        nn.Linear(channels, channels),
        nn.SiLU(),
        nn.Linear(channels, channels),
        nn.SiLU(),
    ]
    if out_channels is not None:
        layers.append(zeroed(nn.Linear(channels, out_channels)))
    return nn.Sequential(*layers)
