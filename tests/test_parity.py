"""Our model reproduces linear-cae and music2latent outputs from their own checkpoints."""

from __future__ import annotations

import pytest
import torch

from lincae_cli.hub.convert import MUSIC2LATENT_SCALE, convert_linear_cae, convert_music2latent
from lincae_cli.hub.store import load_model
from lincae_cli.nn.config import ModelConfig
from tests import reference

pytest.importorskip("linear_cae")
pytest.importorskip("music2latent")


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _audio(
    hop: int, stft_frames: int, batch: int = 2, seed: int = 3, noise: float = 0.05
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    samples = (stft_frames + 3) * hop
    t = torch.arange(samples) / 44100.0
    tones = 0.3 * torch.sin(2 * torch.pi * 220.0 * t) + 0.2 * torch.sin(2 * torch.pi * 1330.0 * t)
    return tones + noise * torch.randn(batch, samples, generator=generator)


def _check_linear_cae(tmp_path, generator_kwargs, frontend_kwargs, stft_frames):
    scale = 33.0
    ref, files = reference.build_linear_cae(
        tmp_path / "0a3afbec_weights", generator_kwargs, frontend_kwargs, scale
    )
    ours = load_model(convert_linear_cae(files, tmp_path / "ours.safetensors", "t", scale))
    hop = frontend_kwargs["hop_size"]
    audio = _audio(hop, stft_frames)
    with torch.inference_mode():
        z_ref = ref.encode(audio)
        z_ours = ours.encode(audio)
        assert z_ours.shape == z_ref.shape
        assert _relative_error(z_ours, z_ref) <= 1e-4
        noise = torch.randn(2, 2, 2 * hop, z_ref.shape[-1] * 8) * 80.0
        y_ref = ref.frontend.to_waveform(
            ref.generator.forward_generator(z_ref / scale, noise, 80.0)
        )
        y_ours = ours.decode(z_ours, initial_noise=noise)
    assert y_ours.shape == y_ref.shape
    assert _relative_error(y_ours, y_ref) <= 1e-4


def test_linear_cae_reduced_parity(tmp_path):
    _check_linear_cae(tmp_path, reference.REDUCED_GENERATOR, reference.REDUCED_FRONTEND, 64)


@pytest.mark.slow
def test_linear_cae_published_size_parity(tmp_path):
    _check_linear_cae(tmp_path, reference.PUBLISHED_GENERATOR, reference.PUBLISHED_FRONTEND, 64)


def _check_music2latent(tmp_path, reduced: bool):
    ref, files = reference.build_music2latent(tmp_path, reduced)
    config = None
    if reduced:
        config = ModelConfig.from_published(
            reference.REDUCED_FRONTEND,
            reference.REDUCED_GENERATOR,
            None,
            scale_factor=MUSIC2LATENT_SCALE,
            clamp_output=True,
        )
    ours = load_model(convert_music2latent(files, tmp_path / "ours.safetensors", "m", config))
    hop = ours.config.hop
    audio = _audio(hop, 64)
    with torch.inference_mode():
        rep = ours.frontend.to_representation(audio)
        z_ref = ref.encoder(rep) / 0.06  # what music2latent's EncoderDecoder.encode returns
        z_ours = ours.encode(audio)
        assert _relative_error(z_ours, z_ref) <= 1e-4
        noise = torch.randn(rep.shape) * 80.0
        rep_ref = ref(z_ref * 0.06, noise, 80.0)
        rep_ours = ours.decode_representation(z_ours, initial_noise=noise)
    assert _relative_error(rep_ours, rep_ref) <= 1e-4


def test_music2latent_reduced_parity(tmp_path):
    _check_music2latent(tmp_path, reduced=True)


@pytest.mark.slow
def test_music2latent_published_size_parity(tmp_path):
    _check_music2latent(tmp_path, reduced=False)


@pytest.mark.parametrize("hop", [128, 512])
def test_frontend_matches_references_and_inverts(hop):
    from linear_cae.components.frontends import ScaledComplexSTFT
    from music2latent.audio import wv2realimag

    from lincae_cli.nn.frontend import SpectralFrontend

    config = ModelConfig().replace(hop=hop)
    ours = SpectralFrontend(config)
    theirs = ScaledComplexSTFT(hop_size=hop, alpha_rescale=0.65, beta_rescale=0.34)
    audio = _audio(hop, 40)
    rep = ours.to_representation(audio)
    assert _relative_error(rep, theirs.to_representation(audio)) <= 1e-5
    assert _relative_error(rep, wv2realimag(audio, hop)) <= 1e-5
    back = ours.to_waveform(rep)
    assert _relative_error(back, theirs.to_waveform(rep)) <= 1e-5
    # The inverse is exact wherever frames overlap fully (not the first/last n_fft - hop) for
    # audio without energy at Nyquist (that bin is dropped): test it on band-limited tones.
    audio = _audio(hop, 40, noise=0.0)
    back = ours.to_waveform(ours.to_representation(audio))
    edge = 3 * hop
    error = (back[:, edge:-edge] - audio[:, edge : back.shape[-1] - edge]).abs().max()
    assert error <= 1e-5 * audio.abs().max()
