"""Latents that depend on the audio alone: padding-exact execution (nn/layers.py), the reference
packages' framing, and chunk-independence of files that fit in one chunk (engine/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lincae_cli.engine.inference import Engine, EngineOptions, decode_to_array, encode_array
from lincae_cli.hub.store import load_model
from lincae_cli.latents.framing import FRAMING_KEYS
from lincae_cli.latents.latfile import read_lat
from lincae_cli.nn.autoencoder import ConsistencyAutoencoder, decoding_noise
from lincae_cli.nn.config import ModelConfig
from tests import reference
from tests.conftest import make_tiny_model, run_lincae, tone


def _published_layout() -> ConsistencyAutoencoder:
    """The reduced published layout (frequency-only first stage, attention, hop 128)."""
    config = ModelConfig.from_published(
        reference.REDUCED_FRONTEND, reference.REDUCED_GENERATOR, reference.DIFFUSION, 33.0
    )
    model = ConsistencyAutoencoder(config)
    reference.randomize(model, seed=5)
    return model.eval()


MODELS = {"embedded-tiny": lambda: make_tiny_model(0), "published-layout": _published_layout}


def _relative_error(ours: object, expected: object) -> float:
    ours, expected = torch.as_tensor(ours), torch.as_tensor(expected)
    return float((ours - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("name", list(MODELS))
def test_encoder_sees_padding_as_if_it_were_not_there(name: str) -> None:
    model = MODELS[name]()
    config = model.config
    hop, n_fft, per_latent = config.hop, config.n_fft, config.frames_per_latent
    generator = torch.Generator().manual_seed(0)
    clip = 0.1 * torch.randn(1, 13 * per_latent * hop + 3 * hop + 77, generator=generator)
    stft_frames = (clip.shape[1] - n_fft) // hop + 1
    width = 40 * per_latent * hop + n_fft - hop  # 40 latent frames
    batch = 0.1 * torch.randn(3, width, generator=generator)
    batch[1] = 0.0
    batch[1, : clip.shape[1]] = clip[0]  # the clip, among other clips, in a longer window
    valid = torch.tensor([40 * per_latent, stft_frames, 17 * per_latent - 3])
    with torch.inference_mode():
        alone = model.encode(clip)
        padded = model.encode(batch, valid)
        other = model.encode(batch[2:, : (17 * per_latent - 4) * hop + n_fft])
    frames = alone.shape[-1]
    assert frames == -(-stft_frames // per_latent)
    assert _relative_error(padded[1, :, :frames], alone[0]) < 1e-5
    assert _relative_error(padded[2, :, :17], other[0]) < 1e-5


@pytest.mark.parametrize("name", list(MODELS))
def test_decoder_sees_padding_as_if_it_were_not_there(name: str) -> None:
    model = MODELS[name]()
    config = model.config
    generator = torch.Generator().manual_seed(1)
    frames, width = 11, 30
    latents = torch.randn(3, config.latent_channels, width, generator=generator)
    noise = torch.randn(3, 2, config.freq_bins, width * config.frames_per_latent) * 80.0
    with torch.inference_mode():
        alone = model.decode(
            latents[1:2, :, :frames],
            initial_noise=noise[1:2, ..., : frames * config.frames_per_latent],
        )
        padded = model.decode(latents, initial_noise=noise, valid=torch.tensor([width, frames, 7]))
    samples = alone.shape[-1]
    assert _relative_error(padded[1, :samples], alone[0]) < 1e-5
    assert not padded[1, samples:].any()  # after the last real frame's reach: silence


# -- the engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> ConsistencyAutoencoder:
    return load_model(tiny_model_path).optimize_for_inference("fp32")


def _engine(model: ConsistencyAutoencoder, **options: object) -> Engine:
    return Engine(model, EngineOptions(precision="fp32", **options))  # type: ignore[arg-type]


def _bare_encode(model: ConsistencyAutoencoder, audio: np.ndarray) -> torch.Tensor:
    """``model.encode`` of the whole clip, statistics computed as the engine computes them
    where windows hold padding (the native channels-last group norm rounds differently)."""
    x = torch.from_numpy(audio)
    config = model.config
    stft_frames = (x.shape[-1] - config.n_fft) // config.hop + 1
    with torch.inference_mode():
        return model.encode(x, torch.full((x.shape[0],), stft_frames))


def test_a_file_within_one_chunk_gives_the_models_own_latents_whatever_the_chunk(
    tiny: ConsistencyAutoencoder,
) -> None:
    audio = tone(6.0, channels=2, seed=4)
    short = encode_array(_engine(tiny, chunk_seconds=10.0), audio, 44100, "x").latents
    long = encode_array(_engine(tiny, chunk_seconds=60.0), audio, 44100, "x").latents
    bare = _bare_encode(tiny, audio)
    assert short.shape == long.shape == bare.shape
    assert _relative_error(short, long) < 1e-5 and _relative_error(short, bare) < 1e-5


def test_short_files_do_not_depend_on_what_else_is_in_the_batch(
    tiny: ConsistencyAutoencoder,
) -> None:
    from lincae_cli.audio.sources import ArraySource

    clip = tone(2.0, seed=5)
    alone = encode_array(_engine(tiny), clip, 44100, "clip")
    engine = _engine(tiny, batch_size=3)
    sources = [
        ArraySource(name, tone(s, seed=i), 44100)
        for i, (name, s) in enumerate([("a", 0.7), ("b", 12.5), ("clip", 2.0)])
    ]
    sources[2] = ArraySource("clip", clip, 44100)
    outcomes = {o.job.name: o.result for o in engine.run([engine.encode_job(s) for s in sources])}
    assert _relative_error(outcomes["clip"].latents, alone.latents) < 1e-5
    decoded_alone, _ = decode_to_array(_engine(tiny), alone)
    jobs = [engine.decode_job(outcomes[name], None, name=name) for name in ("b", "clip", "a")]
    decoded = {o.job.name: o.result.audio for o in engine.run(jobs)}
    scale = abs(decoded_alone).max()
    np.testing.assert_allclose(decoded["clip"], decoded_alone, rtol=0, atol=1e-5 * scale)


def test_decoding_a_short_file_is_the_models_own_decode(tiny: ConsistencyAutoencoder) -> None:
    lat = encode_array(_engine(tiny), tone(1.5, seed=6), 44100, "x")
    decoded, _ = decode_to_array(_engine(tiny, chunk_seconds=30.0), lat)
    config = tiny.config
    with torch.inference_mode():
        noise = decoding_noise(config, 0, 0, lat.frames)[None] * config.sigma_max
        full = torch.tensor([lat.frames])  # the engine's statistics (see _bare_encode)
        bare = tiny.decode(torch.from_numpy(lat.latents), initial_noise=noise, valid=full)[
            0, : decoded.shape[-1]
        ]
    assert _relative_error(torch.from_numpy(decoded[0]), bare) < 1e-5


def test_files_from_before_the_reference_framing_still_decode_aligned(
    tiny: ConsistencyAutoencoder,
) -> None:
    import dataclasses

    engine = _engine(tiny)
    lat = encode_array(engine, tone(1.0, seed=7), 44100, "x")
    assert lat.meta.chunking["stft_start_sample"] == 0
    chunking = {k: v for k, v in lat.meta.chunking.items() if k not in FRAMING_KEYS}
    legacy = dataclasses.replace(lat, meta=dataclasses.replace(lat.meta, chunking=chunking))
    now, _ = decode_to_array(engine, lat)
    before, _ = decode_to_array(engine, legacy)
    # Old files framed STFT frame 0 at sample -(n_fft - hop)/2: the same latents decode 768
    # samples earlier in them.
    shift = (tiny.config.n_fft - tiny.config.hop) // 2
    np.testing.assert_allclose(
        before[0, 4096:30000], now[0, 4096 + shift : 30000 + shift], atol=1e-5
    )


# -- parity with the reference packages through the command line ----------------------------


def test_lincae_encode_gives_linear_cae_latents(tmp_path: Path) -> None:
    pytest.importorskip("linear_cae")
    from lincae_cli.hub.convert import convert_linear_cae

    scale = 33.0
    ref, files = reference.build_linear_cae(
        tmp_path / "0a3afbec_weights",
        reference.REDUCED_GENERATOR,
        reference.REDUCED_FRONTEND,
        scale,
    )
    ours = convert_linear_cae(files, tmp_path / "ours.safetensors", "t", scale)
    audio = tone(1.3, seed=8)  # 1.3 s: within one chunk
    soundfile.write(tmp_path / "clip.wav", audio.T, 44100, subtype="FLOAT")
    done = run_lincae(
        [
            "encode",
            str(tmp_path / "clip.wav"),
            "--model",
            str(ours),
            "--precision",
            "fp32",
            "--dtype",
            "float32",
            "-q",
        ]
    )
    assert done.returncode == 0, done.stderr.decode()
    ours_latents = read_lat(tmp_path / "clip.lat").latents
    with torch.inference_mode():
        theirs = ref.encode(torch.from_numpy(audio))
    assert ours_latents.shape == theirs.shape  # the same frame count
    assert _relative_error(ours_latents, theirs) <= 1e-4


def _m2l_reference_encode(
    monkeypatch: pytest.MonkeyPatch, ref: torch.nn.Module, audio: np.ndarray
) -> np.ndarray:
    """music2latent's own inference (`encode_audio_inference`, its crop included) with the
    reduced model: its module-level hop patched to the reduced one."""
    import types

    import music2latent.audio
    import music2latent.inference

    hop = reference.REDUCED_FRONTEND["hop_size"]
    monkeypatch.setattr(music2latent.inference, "hop", hop)
    monkeypatch.setattr(music2latent.audio, "hop", hop)
    trainer = types.SimpleNamespace(gen=ref)
    with torch.inference_mode():
        latents = music2latent.inference.encode_audio_inference(
            audio, trainer, 44100 * 60, 1, device="cpu"
        )
    return latents.numpy()


def test_lincae_encode_gives_music2latent_latents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """music2latent crops to whole latent frames (floor) where linear-cae pads (ceil): a clip
    whose STFT frames are not a multiple of 2^d gives music2latent's frames, not one more."""
    pytest.importorskip("music2latent")
    from lincae_cli.hub.convert import MUSIC2LATENT_SCALE, convert_music2latent

    ref, files = reference.build_music2latent(tmp_path / "download", reduced=True)
    reduced = ModelConfig.from_published(
        reference.REDUCED_FRONTEND, reference.REDUCED_GENERATOR, None, MUSIC2LATENT_SCALE, True
    )
    ours = convert_music2latent(files, tmp_path / "ours.safetensors", "m", config=reduced)
    audio = tone(1.3, channels=2, seed=9)  # within one chunk
    hop, n_fft, per_latent = reduced.hop, reduced.n_fft, reduced.frames_per_latent
    stft_frames = (audio.shape[-1] - n_fft) // hop + 1
    assert stft_frames % per_latent != 0  # where the two roundings differ
    soundfile.write(tmp_path / "clip.wav", audio.T, 44100, subtype="FLOAT")
    args = ["--model", str(ours), "--precision", "fp32", "-q"]
    done = run_lincae(["encode", str(tmp_path / "clip.wav"), *args, "--dtype", "float32"])
    assert done.returncode == 0, done.stderr.decode()
    lat = read_lat(tmp_path / "clip.lat")
    theirs = _m2l_reference_encode(monkeypatch, ref, audio)
    assert lat.latents.shape == theirs.shape == (2, reduced.latent_channels, 55)
    assert _relative_error(lat.latents, theirs) <= 1e-4
    assert lat.meta.chunking["latent_frame_rounding"] == "floor"
    # Decoding gives the file's exact length; what was not encoded decodes to silence.
    done = run_lincae(["decode", str(tmp_path / "clip.lat"), *args, "-o", str(tmp_path / "y.wav")])
    assert done.returncode == 0, done.stderr.decode()
    decoded, rate = soundfile.read(tmp_path / "y.wav", always_2d=True)
    encoded_samples = (stft_frames // per_latent * per_latent - 1) * hop + n_fft
    assert rate == 44100 and decoded.shape == (audio.shape[-1], 2)
    assert decoded[:encoded_samples].any() and not decoded[encoded_samples:].any()


def test_the_frame_rule_of_a_floor_model_is_one_rule() -> None:
    """latents/framing.py, the model's `latent_frames`, its `encode` and the engine agree."""
    from lincae_cli.latents.framing import expected_frames, latent_frames_for_samples

    model = make_tiny_model(0)
    model.config = model.config.replace(latent_frame_rounding="floor")
    config = model.config
    hop, n_fft, per_latent = config.hop, config.n_fft, config.frames_per_latent
    engine = _engine(model.optimize_for_inference("fp32"), chunk_seconds=1.0)
    chunking = engine.framing.stft_metadata
    assert chunking["latent_frame_rounding"] == "floor"
    for stft_frames in (1, per_latent - 1, per_latent, 5 * per_latent + 3, 30 * per_latent + 7):
        samples = (stft_frames - 1) * hop + n_fft + 11
        frames = max(1, stft_frames // per_latent)
        assert latent_frames_for_samples(samples, hop, n_fft, per_latent, "floor") == frames
        assert expected_frames(chunking, samples, config.latent_hop_samples) == frames
        assert model.latent_frames(samples) == engine.framing.latent_frames(samples) == frames
        audio = tone(samples / 44100, seed=stft_frames)[:, :samples]
        with torch.inference_mode():
            assert model.encode(torch.from_numpy(audio)).shape[-1] == frames
        lat = encode_array(engine, audio, 44100, "x")  # 30·2^d + 7: three chunks
        assert lat.frames == frames


def test_a_music2latent_model_converted_before_the_rounding_key_still_crops(
    tmp_path: Path,
) -> None:
    """Conversions cached before `latent_frame_rounding` existed record no such key; they are
    read with music2latent's rule instead of being converted again."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from lincae_cli.hub.store import save_model

    model = make_tiny_model(0)
    provenance = {"converted_from": "music2latent", "files": ["music2latent.pt"]}
    path = save_model(model, tmp_path / "m.safetensors", "music2latent", provenance)
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(metadata["config"])
    del config["latent_frame_rounding"]
    save_file(state, str(path), metadata={**metadata, "config": json.dumps(config)})
    assert load_model(path).config.latent_frame_rounding == "floor"
    provenance["converted_from"] = "linear-cae"
    save_model(model, path, "lin-cae", provenance)
    assert load_model(path).config.latent_frame_rounding == "ceil"
