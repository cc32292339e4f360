"""The affine correction of latent algebra, as the evaluation measures it (docs/latent-algebra.md).

An encoder that is at best affine, ``Enc(x) = L·x + b`` with ``b = Enc(silence)``, gives
``Σ gᵢ·Enc(xᵢ) = Enc(Σ gᵢ·xᵢ) − (1 − Σ gᵢ)·b``: a weighted sum of latents is off by a multiple
of ``b``. Adding ``(1 − Σ gᵢ)·b`` back makes gains (``a·z + (1 − a)·b``), sums
(``Σ zᵢ − (n − 1)·b``) and differences (``z₁ − z₂ + b``) exact for such an encoder; this is
what ``--affine`` does to `.lat` files (latents/ops.py, latents/edit.py, on NumPy arrays).
linearity.py scores each latent operation both ways; the affine scores carry the keys of the
plain ones with `AFFINE_PREFIX`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

AFFINE_PREFIX = "affine_"
"""`affine_separation_ratio` is `separation_ratio` with the affine correction, and so on."""

CHOICE_KEYS = ("additivity_ratio_pairs", "additivity_ratio_stems", "separation_ratio")
"""The ratios `affine_recommended` compares: the sums and differences of latents (homogeneity,
a gain of one latent, is reported but does not vote)."""


def affine_term(weight_sum: float, silence: torch.Tensor) -> torch.Tensor:
    """``(1 − Σ gᵢ)·b`` as `[1, channels, 1]`, to add to latents ``Σ gᵢ·zᵢ`` `[batch, C, L]`.

    ``silence`` is ``b``, `[channels]`, scaled like the latents.
    """
    return (1.0 - weight_sum) * silence.float().reshape(1, -1, 1)


def affine_recommended(metrics: Mapping[str, float]) -> bool | None:
    """Whether the measurement favours the affine correction: True when the mean of the
    `CHOICE_KEYS` ratios that have data is lower with it than without (each pair shares its
    denominator, so this compares the MSS of the operations' results); None without data."""
    plain: list[float] = []
    affine: list[float] = []
    for key in CHOICE_KEYS:
        before, after = metrics.get(key, math.nan), metrics.get(AFFINE_PREFIX + key, math.nan)
        if math.isfinite(before) and math.isfinite(after):
            plain.append(before)
            affine.append(after)
    if not plain:
        return None
    return sum(affine) < sum(plain)
