"""Audio distances, as pure functions on tensors `[batch, samples]` (or `[samples]`).

MSS (multi-scale spectral distance) is defined in docs/metrics.md: for each STFT size in
MSS_FFT_SIZES (Hann window, hop = size/4, centred), spectral convergence
‖|Y|-|X|‖_F / ‖|Y|‖_F plus the mean absolute difference of natural-log magnitudes; averaged over
the sizes, per example. 0 means identical spectra; Y is the reference.

Decoded audio is compared with its reference over their common length, less a margin at each
end (`aligned`): the model's STFT is uncentred, so its first and last samples are covered by
fewer windows and no decoder can rebuild them (docs/metrics.md, Segments).
"""

from __future__ import annotations

import math

import torch

MSS_FFT_SIZES = (512, 1024, 2048)
_EPS = 1e-8


def aligned(
    estimate: torch.Tensor, reference: torch.Tensor, margin: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both `[batch, samples]` tensors cut to their common length, less `margin` at each end."""
    length = min(estimate.shape[-1], reference.shape[-1])
    if length <= 2 * margin:
        raise ValueError(f"{length} samples leave nothing to compare after a margin of {margin}")
    return estimate[..., margin : length - margin], reference[..., margin : length - margin]


def example_mean(values: torch.Tensor) -> float:
    """The mean of per-example values `[batch]` (in float64), NaN when there are none."""
    return float(values.double().mean()) if values.numel() else math.nan


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 1 else x


def _magnitude(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=_EPS))


def mss(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Multi-scale spectral distance per example: `[batch]`."""
    estimate, reference = _as_batch(estimate).float(), _as_batch(reference).float()
    length = min(estimate.shape[-1], reference.shape[-1])
    estimate, reference = estimate[..., :length], reference[..., :length]
    total = torch.zeros(estimate.shape[0], device=estimate.device)
    for n_fft in MSS_FFT_SIZES:
        est, ref = _magnitude(estimate, n_fft), _magnitude(reference, n_fft)
        convergence = torch.linalg.norm((ref - est).flatten(1), dim=1) / torch.linalg.norm(
            ref.flatten(1), dim=1
        )
        log_distance = (torch.log(ref) - torch.log(est)).abs().flatten(1).mean(1)
        total = total + convergence + log_distance
    return total / len(MSS_FFT_SIZES)


def snr_db(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio in dB per example: `[batch]`."""
    estimate, reference = _as_batch(estimate).float(), _as_batch(reference).float()
    length = min(estimate.shape[-1], reference.shape[-1])
    estimate, reference = estimate[..., :length], reference[..., :length]
    signal = (reference**2).sum(-1)
    noise = ((estimate - reference) ** 2).sum(-1)
    return 10 * torch.log10((signal + _EPS) / (noise + _EPS))


def si_sdr_db(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per example (zero-mean signals): `[batch]`."""
    estimate, reference = _as_batch(estimate).float(), _as_batch(reference).float()
    length = min(estimate.shape[-1], reference.shape[-1])
    estimate = estimate[..., :length] - estimate[..., :length].mean(-1, keepdim=True)
    reference = reference[..., :length] - reference[..., :length].mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (
        (reference**2).sum(-1, keepdim=True) + _EPS
    )
    target = scale * reference
    return 10 * torch.log10(
        ((target**2).sum(-1) + _EPS) / (((estimate - target) ** 2).sum(-1) + _EPS)
    )


def relative_l2(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖estimate - reference‖ / ‖reference‖ per example: `[batch]`."""
    diff = (estimate - reference).flatten(1)
    return torch.linalg.norm(diff, dim=1) / (torch.linalg.norm(reference.flatten(1), dim=1) + _EPS)


def aligned_mss(estimate: torch.Tensor, reference: torch.Tensor, margin: int) -> torch.Tensor:
    """MSS `[batch]` of decoded audio against its reference, `aligned` with `margin`."""
    return mss(*aligned(estimate, reference, margin))


MSS_FLOOR = 1e-3
"""MSS values below this count as this in ratios: a ratio of two such values is 1 (0/0)."""


def matched_ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator` of two mean MSS values, each floored at `MSS_FLOOR`.

    The floor makes 0/0 (a perfect model) a ratio of 1 and keeps x/0 finite (x / MSS_FLOOR).
    NaN (no examples) stays NaN.
    """
    if math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return max(numerator, MSS_FLOOR) / max(denominator, MSS_FLOOR)
