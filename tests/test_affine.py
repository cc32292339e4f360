"""The affine latent algebra (docs/latent-algebra.md) on an exactly affine toy encoder.

The toy encoder maps each block of ``BLOCK`` audio samples to one latent frame,
``Enc(x)[:, k] = W·x[k·BLOCK:(k+1)·BLOCK] + b``: with the correction, every latent operation
(gain, mix, subtract, pad, placing, joining) gives exactly the encoding of the operated audio;
without it, the result is off by a multiple of ``b``. The evaluation's correction (eval/affine.py,
torch) is checked to be the one the commands apply (latents/ops.py, NumPy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lincae_cli.eval.affine import affine_term
from lincae_cli.latents import edit
from lincae_cli.latents.latfile import LatentFile, LatentMeta, provenance_entry
from lincae_cli.latents.ops import gain, mix, subtract
from lincae_cli.latents.timeline import fade_gain

LATENT_CHANNELS = 8
BLOCK = 16  # toy audio samples per latent frame
H = 4096  # the latent hop the metadata records (samples at 44.1 kHz)
FRAMING = {"stft_start_sample": 0, "stft_hop": 512, "n_fft": 2048}

_rng = np.random.default_rng(0)
W = _rng.standard_normal((LATENT_CHANNELS, BLOCK)).astype(np.float64)
B = (0.5 * _rng.standard_normal(LATENT_CHANNELS)).astype(np.float32)


def audio(frames: int, seed: int) -> np.ndarray:
    """Toy audio `[frames · BLOCK]`."""
    return np.random.default_rng(seed).standard_normal(frames * BLOCK) * 0.3


def encode(x: np.ndarray) -> np.ndarray:
    """The exactly affine encoder: `[1, LATENT_CHANNELS, frames]` (float64 maths)."""
    return (W @ x.reshape(-1, BLOCK).T + B[:, None].astype(np.float64))[None]


def lat(x: np.ndarray) -> LatentFile:
    """`encode(x)` as a latent file recording ``b`` (one latent frame per ``H`` samples)."""
    latents = encode(x).astype(np.float32)
    frames = latents.shape[-1]
    meta = LatentMeta(
        model_name="toy-affine",
        model_sha256="ef" * 32,
        scale_factor=1.0,
        model_sample_rate=44100,
        source_sample_rate=44100,
        num_samples=frames * H,
        channels=1,
        latent_rate_hz=44100 / H,
        latent_hop_samples=H,
        chunking=dict(FRAMING),
        provenance=[provenance_entry("encode", input="toy.wav")],
        silence_latent=B.tolist(),
        affine_default=True,
    )
    return LatentFile(latents, meta)


def assert_encodes(result: LatentFile, x: np.ndarray) -> None:
    np.testing.assert_allclose(result.latents, encode(x), atol=2e-5)


def off_by_b(result: LatentFile, x: np.ndarray) -> float:
    """The largest error of `result` against the encoding of `x`."""
    return float(np.abs(result.latents - encode(x)).max())


def test_gain_mix_and_subtract_are_exact_with_b_only() -> None:
    u, v, w = audio(6, 1), audio(6, 2), audio(6, 3)
    for a in (0.25, 0.5, 2.0, -1.0):
        assert_encodes(gain(lat(u), a, silence=B), a * u)
        assert off_by_b(gain(lat(u), a), a * u) > 0.1  # plain: (a - 1)·b too much
    assert_encodes(mix([lat(u), lat(v)], [0.5, 2.0], silence=B), 0.5 * u + 2.0 * v)
    assert_encodes(mix([lat(u), lat(v), lat(w)], silence=B), u + v + w)
    assert off_by_b(mix([lat(u), lat(v)]), u + v) > 0.1  # plain: b too much
    mixture = u + v + w
    assert_encodes(subtract(lat(mixture), [lat(u)], silence=B), v + w)
    assert_encodes(subtract(lat(mixture), [lat(u), lat(v)], silence=B), w)
    assert off_by_b(subtract(lat(mixture), [lat(u)]), v + w) > 0.1  # plain: no b at all


def test_silence_and_time_edits_are_exact_with_b() -> None:
    u, v = audio(5, 4), audio(3, 5)
    silent = np.zeros(2 * BLOCK)
    padded = edit.pad(lat(u), 2 * H, 1 * H, silence=B)
    assert_encodes(padded, np.concatenate([silent, u, silent[:BLOCK]]))
    assert off_by_b(edit.pad(lat(u), 2 * H, 0), np.concatenate([silent, u])) > 0.1
    joined = edit.concat([lat(u), lat(v)], ["u", "v"], silence=B)
    assert_encodes(joined, np.concatenate([u, v]))
    # v placed at frame 4 of u's 5: the output covers both, u + v where they overlap.
    placed = edit.place(
        [edit.Placed(lat(u), "u"), edit.Placed(lat(v), "v", position=4 * H)], "mix", silence=B
    )
    expected = np.zeros(7 * BLOCK)
    expected[: 5 * BLOCK] += u
    expected[4 * BLOCK :] += v
    assert_encodes(placed, expected)
    # A fade is a gain per frame: w(t)·z + (1 - w(t))·b encodes the faded blocks.
    faded = edit.fade(lat(u), 2 * H / 44100, 0.0, "linear", silence=B)
    curve = fade_gain(2 * H / 44100, 0.0, 5 * H / 44100, "linear")
    weights = edit.grid_of(lat(u).meta, 5).per_frame(curve)
    assert 0 < weights[0] < weights[1] < 1 == weights[-1]
    assert_encodes(faded, (u.reshape(5, BLOCK) * weights[:, None]).ravel())


def test_the_evaluation_corrects_as_the_commands_do() -> None:
    """eval/affine.py's (1 - Σ gᵢ)·b on torch latents is latents/ops.py's on NumPy ones."""
    u, v = lat(audio(4, 6)), lat(audio(4, 7))
    b = torch.from_numpy(B)
    as_evaluated = torch.from_numpy(u.latents + v.latents) + affine_term(2.0, b)
    np.testing.assert_allclose(as_evaluated.numpy(), mix([u, v], silence=B).latents, atol=1e-6)
    as_evaluated = torch.from_numpy(u.latents - v.latents) + affine_term(0.0, b)
    np.testing.assert_allclose(as_evaluated.numpy(), subtract(u, [v], silence=B).latents, atol=1e-6)
    as_evaluated = 0.5 * torch.from_numpy(u.latents) + affine_term(0.5, b)
    np.testing.assert_allclose(as_evaluated.numpy(), gain(u, 0.5, silence=B).latents, atol=1e-6)


@pytest.mark.parametrize("a", [0.0, 1.0])
def test_gains_of_zero_and_one(a: float) -> None:
    """Gain 0 gives silence (b, not 0); gain 1 changes nothing."""
    u = audio(3, 8)
    result = gain(lat(u), a, silence=B)
    assert_encodes(result, a * u)
    if a == 0.0:
        assert np.allclose(result.latents, B[None, :, None])


def test_files_keep_b_and_the_default_through_operations() -> None:
    u, v = lat(audio(3, 9)), lat(audio(3, 10))
    for result in (mix([u, v], silence=B), gain(u, 0.5, silence=B), edit.pad(u, H, 0, B)):
        assert result.meta.silence_latent == B.tolist()
        assert result.meta.affine_default is True
