"""Lin-CAE's linearity augmentation, as pure functions on batches.

Homogeneity: a per-example gain `a` scales the target audio and the conditioning latent (the
encoder sees the unscaled audio). Additivity ("mixtures of mixtures"): the batch is doubled with
w·x_i + (1-w)·x_(i-1), conditioned on w·z_i + (1-w)·z_(i-1) instead of Enc(mixture).
"""

from __future__ import annotations

import math

import torch
from lincae_training.config import AugmentSection


def gain_range(progress: float, cfg: AugmentSection) -> tuple[float, float]:
    """(low, high) of the gain distribution at `progress` in [0, 1] of training.

    Full range [0, gain_max] until `anneal_hold`, cosine-annealed to [1, 1] by `anneal_end`,
    then fixed at 1.
    """
    if progress <= cfg.anneal_hold:
        factor = 1.0
    elif progress >= cfg.anneal_end:
        factor = 0.0
    else:
        phase = (progress - cfg.anneal_hold) / (cfg.anneal_end - cfg.anneal_hold)
        factor = 0.5 * (1.0 + math.cos(math.pi * phase))
    return 1.0 - factor, 1.0 + (cfg.gain_max - 1.0) * factor


def sample_gains(
    peaks: torch.Tensor, progress: float, cfg: AugmentSection, generator: torch.Generator
) -> torch.Tensor:
    """Per-example gains `[batch]` for audio with absolute peaks `peaks` `[batch]`.

    With probability `gain_prob` a ~ U[low, high] (values below `gain_zero_below` become 0,
    and with `negative_gains` the sign is random), else 1; |a| is capped so that no scaled
    example clips.
    """
    batch = peaks.shape[0]
    low, high = gain_range(progress, cfg)
    uniform = torch.rand(batch, generator=generator)
    chosen = torch.rand(batch, generator=generator) < cfg.gain_prob
    signs = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    gains = low + (high - low) * uniform
    gains = torch.where(gains < cfg.gain_zero_below, torch.zeros_like(gains), gains)
    if cfg.negative_gains:
        gains = gains * signs
    gains = torch.where(chosen, gains, torch.ones_like(gains))
    cap = 1.0 / (peaks.float() + 1e-7)
    return torch.sign(gains) * torch.minimum(gains.abs(), cap)


def sample_mix_weights(batch: int, cfg: AugmentSection, generator: torch.Generator) -> torch.Tensor:
    """w ~ U[mix_weight_min, 1] per example: `[batch]`."""
    return cfg.mix_weight_min + (1.0 - cfg.mix_weight_min) * torch.rand(batch, generator=generator)


def add_mixtures(
    audio: torch.Tensor, latents: torch.Tensor, mix_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Double the batch with mixtures of neighbours ("mixtures of mixtures").

    audio `[batch, samples]`, latents `[batch, C, L]` = Enc(audio), mix_weights `[batch]`.
    Returns `[2·batch, samples]` and `[2·batch, C, L]`: the originals, then
    w·x_i + (1-w)·x_(i-1) with latents w·z_i + (1-w)·z_(i-1) (never Enc of the mixture).
    """
    w_audio = mix_weights[:, None].to(audio.dtype)
    w_latent = mix_weights[:, None, None].to(latents.dtype)
    mixtures = w_audio * audio + (1.0 - w_audio) * torch.roll(audio, 1, dims=0)
    mixed_latents = w_latent * latents + (1.0 - w_latent) * torch.roll(latents, 1, dims=0)
    return torch.cat([audio, mixtures]), torch.cat([latents, mixed_latents])


def apply_gains(
    audio: torch.Tensor, latents: torch.Tensor, gains: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale target audio `[batch, samples]` and conditioning latents `[batch, C, L]` by the
    same per-example gains `[batch]` (homogeneity: Dec(a·z) should be a·x)."""
    return audio * gains[:, None].to(audio.dtype), latents * gains[:, None, None].to(latents.dtype)
