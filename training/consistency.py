"""Consistency training maths: noise-level sampling, the shrinking step, the loss."""

from __future__ import annotations

import math

import torch
from lincae_training.config import ConsistencySection

from lincae_cli.nn.config import ModelConfig


def sigma_at(index: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """Noise level at continuous index u in [0, 1] of the rho-spaced schedule (0 -> sigma_min)."""
    lo = model.sigma_min ** (1.0 / model.rho)
    hi = model.sigma_max ** (1.0 / model.rho)
    return (lo + index * (hi - lo)) ** model.rho


def step_size(progress: float, cfg: ConsistencySection) -> float:
    """Index-space gap between student and teacher: base_step^(start_exp..end_exp), shrinking
    exponentially over training (0.1 -> 0.01 by default)."""
    exponent = cfg.start_exp + (cfg.end_exp - cfg.start_exp) * min(max(progress, 0.0), 1.0)
    return cfg.base_step**exponent


def index_weights(cfg: ConsistencySection, model: ModelConfig) -> torch.Tensor:
    """Sampling weights over the index grid: a normal density of log sigma (P_mean, P_std)."""
    grid = torch.arange(cfg.index_grid - 1, dtype=torch.float64) / (cfg.index_grid - 1)
    log_sigma = torch.log(sigma_at(grid, model))
    return torch.exp(-0.5 * ((log_sigma - cfg.p_mean) / cfg.p_std) ** 2)


def sample_indices(batch: int, weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Continuous indices `[batch]` in [0, 1): a weighted grid point plus uniform jitter."""
    grid = weights.shape[0] + 1
    points = torch.multinomial(weights, batch, replacement=True, generator=generator)
    jitter = torch.rand(batch, generator=generator, dtype=torch.float64)
    return ((points.double() + jitter) / (grid - 1)).float()


def pseudo_huber(
    student: torch.Tensor, teacher: torch.Tensor, c_per_sqrt_dim: float
) -> torch.Tensor:
    """Per-example sqrt(‖student - teacher‖² + c²) - c with c = c_per_sqrt_dim·sqrt(dim)."""
    diff = (student.float() - teacher.float()).flatten(1)
    c = c_per_sqrt_dim * math.sqrt(diff.shape[1])
    return torch.sqrt((diff**2).sum(1) + c * c) - c
