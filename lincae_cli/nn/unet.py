"""The three networks: encoder, latent pyramid decoder and the consistency generator U-Net.

Shapes: representation `[batch, 2, 2·hop, frames]`; latent `[batch, latent_channels,
frames / 2^time_downsamples]`; the pyramid is a list of feature maps, finest level first.
Every network takes ``valid``, the real frames of each example at its input's time resolution
(padding-exact execution, see layers.py); None means all frames are real.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lincae_cli.nn.config import ModelConfig
from lincae_cli.nn.layers import (
    Downsample,
    FourierEmbedding,
    FreqGain,
    PositionalEmbedding,
    ResBlock,
    Upsample,
    add_,
    group_norm,
    mlp,
    zero_padding,
    zeroed,
)

_SQRT2 = math.sqrt(2.0)
_SQRT3 = math.sqrt(3.0)


def _level_channels(config: ModelConfig) -> list[int]:
    return [config.base_channels * m for m in config.multipliers]


class Encoder(nn.Module):
    """2-D U-Net encoder down to a tanh-bounded latent `[batch, latent_channels, frames']`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = _level_channels(config)
        self.gain = FreqGain(config.freq_bins)
        self.conv_inp = nn.Conv2d(2, channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        width = channels[0]
        last = len(channels) - 1
        for level, (count, attend) in enumerate(
            zip(config.encoder_layers, config.encoder_attention, strict=True)
        ):
            for _ in range(count):
                layers.append(
                    ResBlock(
                        width, channels[level], attention=bool(attend), heads=config.encoder_heads
                    )
                )
                width = channels[level]
            if level != last:
                layers.append(
                    Downsample(
                        width,
                        width,
                        freq_only=config.freq_downsample[level] == 1,
                        normalize=config.pre_normalize_downsampling_encoder,
                    )
                )
        self.down_layers = nn.ModuleList(layers)
        self.prenorm_1d_to_2d = group_norm(width) if config.pre_normalize_2d_to_1d else None
        flat = width * config.bottleneck_freq_bins
        bottleneck: list[nn.Module] = [nn.Conv1d(flat, config.bottleneck_base_channels, 1)]
        for _ in range(config.num_bottleneck_layers):
            bottleneck.append(
                ResBlock(
                    config.bottleneck_base_channels, config.bottleneck_base_channels, two_d=False
                )
            )
        self.bottleneck_layers = nn.Sequential(*bottleneck)
        self.norm_out = group_norm(config.bottleneck_base_channels)
        self.conv_out = nn.Conv1d(config.bottleneck_base_channels, config.latent_channels, 1)

    def forward(self, rep: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid``: real STFT frames per example; the latent has ceil(valid / 2^d) of them."""
        x = self.conv_inp(zero_padding(rep if valid is None else rep.clone(), valid))
        if self.config.frequency_scaling:
            x = self.gain(x)
        for layer in self.down_layers:
            if isinstance(layer, Downsample):
                x, valid = layer(x, valid), layer.output_valid(valid)
            else:
                x = layer(x, valid=valid)
        if self.prenorm_1d_to_2d is not None:
            x = self.prenorm_1d_to_2d(x, valid)
        batch, channels, freq, frames = x.shape
        # Flatten channel-major: index = channel·freq + bin.
        x = x.reshape(batch, channels * freq, frames)
        x = _bottleneck(self.bottleneck_layers, x, valid)
        return torch.tanh(self.conv_out(F.silu(self.norm_out(x, valid))))


def _bottleneck(layers: nn.Sequential, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution, then 1-D residual blocks (the `bottleneck_layers` of the checkpoints)."""
    for layer in layers:
        x = layer(x, valid=valid) if isinstance(layer, ResBlock) else layer(x)
    return x


class LatentPyramid(nn.Module):
    """Latent -> one conditioning feature map per U-Net level (finest first)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.freq_bins = config.bottleneck_freq_bins
        channels = _level_channels(config)
        width = channels[-1]
        base = config.bottleneck_base_channels
        self.conv_inp = nn.Conv1d(config.latent_channels, base, 1)
        self.bottleneck_layers = nn.Sequential(
            *[ResBlock(base, base, two_d=False) for _ in range(config.num_bottleneck_layers)]
        )
        self.conv_out_bottleneck = nn.Conv1d(base, width * self.freq_bins, 1)
        layers: list[nn.Module] = []
        self.level_sizes: list[int] = []
        levels = len(channels)
        for step in range(levels):  # coarsest level first
            level = levels - 1 - step
            count = config.encoder_layers[level]
            for _ in range(count):
                layers.append(
                    ResBlock(
                        width,
                        width,
                        attention=bool(config.encoder_attention[level]),
                        heads=config.encoder_heads,
                    )
                )
            self.level_sizes.append(count)
            if level != 0:
                target = channels[level - 1]
                layers.append(
                    Upsample(width, target, freq_only=config.freq_downsample[level - 1] == 1)
                )
                width = target
        self.up_layers = nn.ModuleList(layers)

    def forward(
        self, latent: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """The pyramid (finest first) and each level's real frames, for ``valid`` real latent
        frames per example."""
        x = _bottleneck(self.bottleneck_layers, self.conv_inp(latent), valid)
        x = self.conv_out_bottleneck(x)
        batch, flat, frames = x.shape
        # Unflatten bin-major: index = bin·channels + channel.
        x = x.reshape(batch, self.freq_bins, flat // self.freq_bins, frames).transpose(1, 2)
        pyramid, valids = [], []
        layers = iter(self.up_layers)
        for step, count in enumerate(self.level_sizes):
            for _ in range(count):
                x = next(layers)(x, valid=valid)
            pyramid.append(x)
            valids.append(valid)
            if step != len(self.level_sizes) - 1:
                upsample = next(layers)
                x, valid = upsample(x, valid), upsample.output_valid(valid)
        return pyramid[::-1], valids[::-1]


def preconditioning(
    sigma: torch.Tensor, sigma_min: float, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM/consistency coefficients c_skip, c_out, c_in, each `[batch, 1, 1, 1]`.

    c_skip(sigma_min) = 1 and c_out(sigma_min) = 0: the boundary condition f(x, sigma_min) = x.
    """
    shifted = sigma - sigma_min
    c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
    c_out = sigma_data * shifted / torch.sqrt(sigma_data**2 + sigma**2)
    c_in = 1.0 / torch.sqrt(sigma**2 + sigma_data**2)
    shape = (-1, 1, 1, 1)
    return c_skip.reshape(shape), c_out.reshape(shape), c_in.reshape(shape)


class Generator(nn.Module):
    """The consistency function f(x_sigma, sigma | latent pyramid) -> clean representation."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = _level_channels(config)
        cond = config.cond_channels
        self.emb = (
            FourierEmbedding(cond, config.fourier_scale)
            if config.use_fourier
            else PositionalEmbedding(cond)
        )
        self.emb_proj = mlp(cond)
        self.scale_inp = mlp(cond, config.freq_bins)
        self.scale_out = mlp(cond, config.freq_bins)
        self.conv_inp = nn.Conv2d(2, channels[0], 3, padding=1)
        levels = len(channels)
        down: list[nn.Module] = []
        for level in range(levels):
            width = channels[level]
            for _ in range(config.layers[level]):
                down.append(nn.Conv2d(width, width, 1))
                down.append(
                    ResBlock(width, width, cond, bool(config.attention[level]), config.heads)
                )
            if level != levels - 1:
                freq_only = config.freq_downsample[level] == 1
                down.append(Downsample(width, channels[level + 1], freq_only, normalize=False))
        up: list[nn.Module] = []
        for level in reversed(range(levels)):
            width = channels[level]
            for _ in range(config.layers[level]):
                up.append(nn.Conv2d(width, width, 1))
                up.append(ResBlock(width, width, cond, bool(config.attention[level]), config.heads))
            if level != 0:
                freq_only = config.freq_downsample[level - 1] == 1
                up.append(Upsample(width, channels[level - 1], freq_only))
        self.down_layers = nn.ModuleList(down)
        self.up_layers = nn.ModuleList(up)
        self.conv_decoded = nn.Conv2d(channels[0], channels[0], 1)
        self.norm_out = group_norm(channels[0])
        self.conv_out = zeroed(nn.Conv2d(channels[0], 2, 3, padding=1))

    def forward(
        self,
        noisy: torch.Tensor,
        sigma: torch.Tensor,
        pyramid: list[torch.Tensor],
        valids: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """noisy `[batch, 2, F, T]`, sigma `[batch]` -> denoised `[batch, 2, F, T]`; ``valids``:
        each level's real frames (from `LatentPyramid`; None: all real). Padding frames of the
        output are zero."""
        valids = valids or [None] * len(pyramid)
        config = self.config
        batch = noisy.shape[0]
        sigma = sigma.to(torch.float32).expand(batch) if sigma.dim() else sigma.repeat(batch)
        emb = self.emb(torch.log(sigma) / 4.0)
        time_emb = self.emb_proj(emb)
        c_skip, c_out, c_in = preconditioning(sigma, config.sigma_min, config.sigma_data)

        x = self.conv_inp(zero_padding(c_in * noisy, valids[0]))
        if config.frequency_scaling:
            x = x * (1.0 + self.scale_inp(emb).reshape(batch, 1, -1, 1))
        skips = []
        layers = iter(self.down_layers)
        levels = len(config.layers)
        for level in range(levels):
            for _ in range(config.layers[level]):
                x = add_(next(layers)(pyramid[level]), x).div_(_SQRT2)
                x = next(layers)(x, time_emb, valids[level])
                skips.append(x)
            if level != levels - 1:
                x = next(layers)(x, valids[level])
        layers = iter(self.up_layers)
        for level in reversed(range(levels)):
            for _ in range(config.layers[level]):
                x = add_(x + skips.pop(), next(layers)(pyramid[level])).div_(_SQRT3)
                x = next(layers)(x, time_emb, valids[level])
            if level != 0:
                x = next(layers)(x, valids[level])
        # The output head runs in fp32 even under autocast: its error reaches the audio directly.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = add_(self.conv_decoded(pyramid[0].float()), x.float()).div_(_SQRT2)
            x = self.norm_out(x, valids[0])
            x = F.silu(x)
            if config.frequency_scaling:
                x = x * (1.0 + self.scale_out(emb).reshape(batch, 1, -1, 1))
            x = self.conv_out(zero_padding(x, valids[0]))
        return zero_padding(c_skip * noisy.float() + c_out * x, valids[0])
