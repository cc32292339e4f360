"""The encoder and decoder the evaluation runs on, as plain callables.

The linearity maths (linearity.py, references.py) takes any `Encode` and `Decode`, so it can be
checked with toy models; `model_codec` makes the pair from a ConsistencyAutoencoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lincae_cli.nn.autoencoder import ConsistencyAutoencoder

Encode = Callable[[torch.Tensor], torch.Tensor]
"""Audio `[batch, samples]` -> latents `[batch, channels, frames]`."""
Decode = Callable[[torch.Tensor], torch.Tensor]
"""Latents `[batch, channels, frames]` -> audio `[batch, samples']`."""


def model_codec(
    model: ConsistencyAutoencoder, seed: int = 0, batch_size: int = 8, steps: int = 1
) -> tuple[Encode, Decode]:
    """`encode` and `decode` callables running `model` in batches of `batch_size`, no grad.

    Inputs may be on any device; outputs are on the CPU. Every decode starts from the model's
    decoding noise of `seed` (`decoding_noise`, the same for every example), so results do not
    depend on the batch size or an example's position in it (with `steps` > 1 the noise of later
    steps comes from a generator seeded per batch).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    config = model.config
    device = model.device

    @torch.inference_mode()
    def encode(audio: torch.Tensor) -> torch.Tensor:
        parts = [
            model.encode(audio[start : start + batch_size].to(device)).cpu()
            for start in range(0, audio.shape[0], batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, config.latent_channels, 0)

    @torch.inference_mode()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        parts = [
            model.decode(latents[start : start + batch_size].to(device), steps, seed).cpu()
            for start in range(0, latents.shape[0], batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, 0)

    return encode, decode
