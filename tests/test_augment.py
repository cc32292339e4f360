"""Lin-CAE's linearity augmentation: the gain and mixture maths, and how the consistency loss
feeds them to the network (encoder on unscaled audio, scaled targets and latents)."""

from __future__ import annotations

import math

import pytest
import torch
from lincae_training import augment, consistency
from lincae_training.config import AugmentSection, ConsistencySection, TrainConfig
from lincae_training.trainer import ConsistencyLoss, crop_samples, draw_step_inputs
from torch import nn

from lincae_cli.nn.autoencoder import ConsistencyAutoencoder
from lincae_cli.nn.config import preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CROP_FRAMES = 8


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_config(**augment_settings) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"preset": "tiny"},
            "train": {"batch_size": 3, "total_steps": 100, "precision": "fp32"},
            "data": {"crop_frames": CROP_FRAMES},
            "augment": augment_settings,
        }
    )


@pytest.fixture(scope="module")
def tiny_model() -> ConsistencyAutoencoder:
    torch.manual_seed(0)
    return ConsistencyAutoencoder(preset("tiny")).eval()


def test_audio(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Distinct chirps and noise per example, peaks between 0.3 and 0.9."""
    time = torch.arange(samples) / 44100.0
    rows = []
    for i in range(batch):
        chirp = torch.sin(2 * math.pi * (200.0 + 300.0 * i) * time * (1.0 + 3.0 * time))
        noise = torch.randn(samples, generator=generator(seed + i))
        row = chirp + 0.1 * noise
        rows.append((0.3 + 0.2 * i) * row / row.abs().max())
    return torch.stack(rows)


test_audio.__test__ = False  # a helper, not a test


# -- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (0.0, (0.0, 3.0)),
        (0.2, (0.0, 3.0)),
        (0.55, (0.5, 2.0)),
        (0.9, (1.0, 1.0)),
        (1.0, (1.0, 1.0)),
    ],
)
def test_gain_range_anneals_from_full_range_to_one(progress, expected):
    low, high = augment.gain_range(progress, AugmentSection())
    assert low == pytest.approx(expected[0], abs=1e-12)
    assert high == pytest.approx(expected[1], abs=1e-12)


def test_gain_range_is_cosine_between_hold_and_end():
    cfg = AugmentSection()
    for progress in (0.3, 0.4, 0.7, 0.8):
        factor = 0.5 * (1.0 + math.cos(math.pi * (progress - 0.2) / 0.7))
        low, high = augment.gain_range(progress, cfg)
        assert low == pytest.approx(1.0 - factor)
        assert high == pytest.approx(1.0 + 2.0 * factor)


def test_sample_gains_distribution_zeroing_and_probability():
    cfg = AugmentSection()
    peaks = torch.full((20000,), 0.2)  # cap 5 > gain_max: never binding
    gains = augment.sample_gains(peaks, 0.0, cfg, generator())
    assert gains.min() >= 0.0 and gains.max() <= 3.0
    # Values below 0.05 are exactly 0; none in (0, 0.05).
    assert not ((gains > 0) & (gains < 0.05)).any()
    zero_fraction = (gains == 0).float().mean().item()
    assert zero_fraction == pytest.approx(0.8 * 0.05 / 3.0, abs=0.005)
    # 20% keep gain 1 exactly; the chosen 80% are uniform on [0, 3] (mean 1.5).
    assert (gains == 1.0).float().mean().item() == pytest.approx(0.2, abs=0.015)
    chosen = gains[gains != 1.0]
    assert chosen.mean().item() == pytest.approx(1.5 - 0.05**2 / 6.0, abs=0.03)
    assert (gains >= 0).all()


def test_sample_gains_after_annealing_is_one():
    gains = augment.sample_gains(torch.full((500,), 0.5), 0.95, AugmentSection(), generator())
    assert torch.equal(gains, torch.ones(500))


def test_gain_cap_prevents_clipping():
    audio = test_audio(64, 4096) * torch.linspace(0.5, 3.0, 64)[:, None]  # some peaks above 1
    peaks = audio.abs().amax(dim=1)
    for cfg in (AugmentSection(), AugmentSection(negative_gains=True)):
        gains = augment.sample_gains(peaks, 0.0, cfg, generator(3))
        scaled, _ = augment.apply_gains(audio, torch.zeros(64, 4, 2), gains)
        assert scaled.abs().max() <= 1.0 + 1e-6
    # The cap is |a| <= 1 / peak, and binds on the loud examples.
    assert (gains.abs() <= 1.0 / peaks + 1e-6).all()
    assert (gains.abs() * peaks > 0.999).any()


def test_negative_gains_option():
    peaks = torch.full((2000,), 0.2)
    positive = augment.sample_gains(peaks, 0.0, AugmentSection(), generator())
    signed = augment.sample_gains(peaks, 0.0, AugmentSection(negative_gains=True), generator())
    assert (positive >= 0).all()
    assert (signed < 0).float().mean().item() == pytest.approx(0.4, abs=0.05)
    # Same draws, random sign: the magnitudes agree.
    assert torch.equal(signed.abs(), positive)


def test_mix_weights_range():
    weights = augment.sample_mix_weights(5000, AugmentSection(), generator())
    assert weights.min() >= 0.5 and weights.max() <= 1.0
    assert weights.mean().item() == pytest.approx(0.75, abs=0.01)


def test_add_mixtures_rolls_by_one_and_mixes_latents_not_audio():
    audio = test_audio(3, 1000)
    latents = torch.randn(3, 4, 5, generator=generator(1))
    weights = torch.tensor([0.5, 0.7, 0.9])
    doubled_audio, doubled_latents = augment.add_mixtures(audio, latents, weights)
    assert doubled_audio.shape == (6, 1000) and doubled_latents.shape == (6, 4, 5)
    assert torch.equal(doubled_audio[:3], audio) and torch.equal(doubled_latents[:3], latents)
    for i, previous in ((0, 2), (1, 0), (2, 1)):
        w = weights[i]
        torch.testing.assert_close(doubled_audio[3 + i], w * audio[i] + (1 - w) * audio[previous])
        torch.testing.assert_close(
            doubled_latents[3 + i], w * latents[i] + (1 - w) * latents[previous]
        )


def test_apply_gains_scales_audio_and_latents_alike():
    audio, latents = test_audio(3, 100), torch.randn(3, 4, 5, generator=generator(2))
    gains = torch.tensor([0.0, 0.5, 2.0])
    scaled_audio, scaled_latents = augment.apply_gains(audio, latents, gains)
    torch.testing.assert_close(scaled_audio, gains[:, None] * audio)
    torch.testing.assert_close(scaled_latents, gains[:, None, None] * latents)


# -- consistency maths (spec values) ----------------------------------------------------------


def test_step_size_shrinks_from_0_1_to_0_01():
    cfg = ConsistencySection()
    assert consistency.step_size(0.0, cfg) == pytest.approx(0.1)
    assert consistency.step_size(0.5, cfg) == pytest.approx(0.1**1.5)
    assert consistency.step_size(1.0, cfg) == pytest.approx(0.01)


def test_noise_levels_follow_lognormal_weights_on_the_rho_schedule():
    config = preset("tiny")
    assert consistency.sigma_at(torch.tensor(0.0), config).item() == pytest.approx(0.002)
    assert consistency.sigma_at(torch.tensor(1.0), config).item() == pytest.approx(80.0)
    weights = consistency.index_weights(ConsistencySection(), config)
    index = consistency.sample_indices(40000, weights, generator())
    log_sigma = torch.log(consistency.sigma_at(index, config)).double()
    assert log_sigma.min() >= math.log(0.002) - 1e-4 and log_sigma.max() <= math.log(80) + 1e-4
    # As in linear-cae: the index u is uniform on a grid weighted by the N(-1.1, 2) density of
    # ln sigma(u) (no Jacobian), so E[ln sigma] = ∫ ln s(u) N(ln s(u)) du / ∫ N(ln s(u)) du.
    u = torch.linspace(0.0, 1.0, 100001, dtype=torch.float64)
    grid_log_sigma = torch.log(consistency.sigma_at(u, config))
    density = torch.exp(-0.5 * ((grid_log_sigma + 1.1) / 2.0) ** 2)
    expected = (grid_log_sigma * density).sum() / density.sum()
    assert log_sigma.mean().item() == pytest.approx(expected.item(), abs=0.03)
    for quantile in (0.1, 0.5, 0.9):
        cumulative = torch.cumsum(density, 0) / density.sum()
        expected_q = grid_log_sigma[torch.searchsorted(cumulative, quantile)].item()
        assert torch.quantile(log_sigma, quantile).item() == pytest.approx(expected_q, abs=0.06)


def test_pseudo_huber_constant_scales_with_sqrt_dim():
    student = torch.zeros(2, 2, 64, 8)
    teacher = torch.zeros(2, 2, 64, 8)
    teacher[1, 0, 0, 0] = 3.0
    loss = consistency.pseudo_huber(student, teacher, 0.00054)
    c = 0.00054 * math.sqrt(2 * 64 * 8)
    torch.testing.assert_close(loss, torch.tensor([0.0, math.sqrt(9.0 + c * c) - c]))


# -- the batch builder and the loss ---------------------------------------------------------


class Spy(nn.Module):
    """Wraps a module and records the first positional argument of every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.outputs: list = []

    def forward(self, first, *rest):
        self.inputs.append(first.detach().clone())
        out = self.inner(first, *rest)
        self.outputs.append(out)
        return out


def spied_loss(model: ConsistencyAutoencoder, cfg: TrainConfig, audio: torch.Tensor, step: int):
    """Run ConsistencyLoss on `audio` with spies on the encoder, pyramid and generator."""
    weights = consistency.index_weights(cfg.consistency, model.config)
    inputs = draw_step_inputs(audio, step, 0, cfg, model, weights)
    encoder, pyramid, unet = model.encoder, model.pyramid, model.unet
    spies = {"encoder": Spy(encoder), "pyramid": Spy(pyramid), "unet": Spy(unet)}
    for name, spy in spies.items():
        setattr(model, name, spy)
    try:
        loss = ConsistencyLoss(model, cfg, None)(inputs)
    finally:
        model.encoder, model.pyramid, model.unet = encoder, pyramid, unet
    return inputs, spies, loss


def test_loss_encodes_unscaled_audio_and_scales_targets_and_latents(tiny_model):
    cfg = tiny_config(gain=True, additivity=True)
    audio = test_audio(3, crop_samples(tiny_model, CROP_FRAMES))
    inputs, spies, loss = spied_loss(tiny_model, cfg, audio, step=0)
    gains, weights = inputs.gains, inputs.mix_weights
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert gains is not None and weights is not None and gains.shape == (6,)
    assert not torch.allclose(gains, torch.ones(6))  # the draw actually scales something

    # The encoder ran once, on the B unscaled originals (mixtures are never encoded).
    (encoder_input,) = spies["encoder"].inputs
    torch.testing.assert_close(encoder_input, tiny_model.frontend.to_representation(audio))
    z = spies["encoder"].outputs[0].float()

    # The conditioning latents: gain · [z ; w·z_i + (1-w)·z_(i-1)].
    (condition,) = spies["pyramid"].inputs
    w = weights[:, None, None]
    expected = torch.cat([z, w * z + (1 - w) * torch.roll(z, 1, dims=0)]) * gains[:, None, None]
    torch.testing.assert_close(condition, expected)
    # ... which is not the encoding of the mixtures themselves.
    mixtures = weights[:, None] * audio + (1 - weights[:, None]) * torch.roll(audio, 1, dims=0)
    with torch.no_grad():
        z_mixture = tiny_model.encoder(tiny_model.frontend.to_representation(mixtures))
    assert (condition[3:] / gains[3:, None, None] - z_mixture).abs().max() > 1e-3

    # Student (first call, higher sigma) and teacher share the noise and the scaled target.
    student_input, teacher_input = spies["unet"].inputs
    target_audio = torch.cat([audio, mixtures]) * gains[:, None]
    target = tiny_model.frontend.to_representation(target_audio)
    noise = inputs.noise
    torch.testing.assert_close(student_input, target + inputs.sigma[:, None, None, None] * noise)
    torch.testing.assert_close(
        teacher_input, target + inputs.sigma_next[:, None, None, None] * noise
    )
    assert (inputs.sigma > inputs.sigma_next).all()
    assert spies["unet"].outputs[0].requires_grad and not spies["unet"].outputs[1].requires_grad


def test_batch_builder_caps_gains_on_the_mixed_batch(tiny_model):
    cfg = tiny_config(gain=True, additivity=True)
    audio = test_audio(3, crop_samples(tiny_model, CROP_FRAMES)) / 0.7 * 0.98  # peaks up to 0.98
    weights = consistency.index_weights(cfg.consistency, tiny_model.config)
    for step in range(10):
        inputs = draw_step_inputs(audio, step, 0, cfg, tiny_model, weights)
        w = inputs.mix_weights[:, None]
        targets = torch.cat([audio, w * audio + (1 - w) * torch.roll(audio, 1, dims=0)])
        assert (targets * inputs.gains[:, None]).abs().max() <= 1.0 + 1e-6


def test_batch_builder_follows_the_annealing_schedule(tiny_model):
    cfg = tiny_config(gain=True, additivity=False)  # total_steps = 100
    audio = 0.1 * test_audio(3, crop_samples(tiny_model, CROP_FRAMES))
    weights = consistency.index_weights(cfg.consistency, tiny_model.config)
    late = torch.cat(
        [draw_step_inputs(audio, s, 0, cfg, tiny_model, weights).gains for s in (90, 99)]
    )
    assert torch.equal(late, torch.ones(6))
    early = torch.cat(
        [draw_step_inputs(audio, s, 0, cfg, tiny_model, weights).gains for s in range(20)]
    )
    assert early.max() > 2.0 and early.min() < 0.5


def test_baseline_config_passes_audio_and_latents_unchanged(tiny_model):
    cfg = tiny_config(gain=False, additivity=False)
    audio = test_audio(3, crop_samples(tiny_model, CROP_FRAMES))
    inputs, spies, loss = spied_loss(tiny_model, cfg, audio, step=5)
    assert inputs.gains is None and inputs.mix_weights is None and loss.shape == (3,)
    (condition,) = spies["pyramid"].inputs
    assert torch.equal(condition, spies["encoder"].outputs[0].float())
    target = tiny_model.frontend.to_representation(audio)
    torch.testing.assert_close(
        spies["unet"].inputs[0], target + inputs.sigma[:, None, None, None] * inputs.noise
    )
