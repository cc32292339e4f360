"""The inference engine (engine/inference.py, engine/runner.py): time alignment, chunking,
batching, determinism, bounded memory, seams, and the library API in lincae_cli/__init__.py."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import lincae_cli
from lincae_cli.audio.sink import OutputOptions
from lincae_cli.audio.sources import ArraySource, AudioSource
from lincae_cli.engine.inference import Engine, EngineOptions, decode_to_array, encode_array
from lincae_cli.errors import LincaeError
from lincae_cli.hub.store import load_model
from lincae_cli.nn.autoencoder import decoding_noise
from lincae_cli.nn.config import preset
from tests.conftest import tone

H = 4096  # latent hop of every preset


class AlignmentModel:
    """Stands in for ConsistencyAutoencoder with an exactly known relation to time.

    encode: latent frame k = mean over its STFT frames of the input sample at each frame's
    centre (so a ramp x[n] = n encodes to the centre sample of every frame). decode: the output
    sample at each position is the value of the latent frame covering it. Neither depends on
    the rest of the window, so chunked results must equal unchunked ones.
    """

    def __init__(self, decoded_gain: float = 1.0) -> None:
        self.config = preset("tiny")
        self.device = torch.device("cpu")
        self.precision = None
        self.precision_name = "fp32"
        self.name = "alignment"
        self.weights_sha256 = "a" * 64
        self.decoded_gain = decoded_gain
        self.encoded_windows = 0
        self.silence_latent_values = [0.0] * self.config.latent_channels  # encode(0) is 0
        self.affine_default = False
        self.restore_loudness = False

    def parameters(self) -> Iterator[torch.Tensor]:  # no weights (the engine sizes its memory)
        return iter(())

    buffers = parameters

    def encode(self, audio: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        batch, length = audio.shape
        frames = (length - config.n_fft) // config.hop + 1
        centres = config.n_fft // 2 + config.hop * torch.arange(frames)
        values = audio[:, centres].double()
        latents = values.reshape(batch, -1, config.frames_per_latent).mean(-1)
        self.encoded_windows += batch
        return latents[:, None, :].expand(batch, config.latent_channels, -1).float()

    def decode(
        self,
        latents: torch.Tensor,
        steps: int = 1,
        initial_noise: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Frame k's value over samples [k·H, (k+1)·H) of the window, then the STFT overhang.
        config = self.config
        body = latents[:, 0, :].repeat_interleave(H, dim=1) * self.decoded_gain
        return torch.nn.functional.pad(body, (0, config.n_fft - config.hop))


def _engine(model: object, **options: object) -> Engine:
    return Engine(model, EngineOptions(precision="fp32", **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 100.0])
def test_latent_frame_k_starts_at_sample_k_hop(chunk_seconds: float) -> None:
    samples = 40 * H - 123
    ramp = np.arange(samples, dtype=np.float32)[None]
    lat = encode_array(_engine(AlignmentModel(), chunk_seconds=chunk_seconds), ramp, 44100, "r")
    assert lat.frames == 40
    # Frame k's STFT frames cover samples [k·H, (k+1)·H + n_fft - hop), as in linear-cae: their
    # centres average to k·H + H/2 + (n_fft - hop)/2. The last frame runs past the end (zeros).
    centres = np.arange(39) * H + H / 2 + 768
    np.testing.assert_allclose(lat.latents[0, 0, :39], centres, rtol=1e-6)
    assert lat.meta.chunking["chunk_frames"] == round(chunk_seconds * 44100 / H)


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 100.0])
def test_decoding_frames_a_to_b_gives_samples_a_hop_to_b_hop(chunk_seconds: float) -> None:
    engine = _engine(AlignmentModel(), chunk_seconds=chunk_seconds)
    lat = encode_array(engine, np.arange(23 * H, dtype=np.float32)[None], 44100, "r")
    audio, rate = decode_to_array(engine, lat)
    assert rate == 44100 and audio.shape == (1, 23 * H)
    expected = (np.arange(22 * H) // H) * H + H / 2 + 768  # the last frame runs past the end
    np.testing.assert_allclose(audio[0, : 22 * H], expected, rtol=1e-6)


def test_decoded_audio_is_trimmed_and_resampled_back_to_the_source() -> None:
    engine = _engine(AlignmentModel(decoded_gain=1e-6), chunk_seconds=0.5)
    audio = tone(1.3, 48000, channels=2)
    lat = encode_array(engine, audio, 48000, "x")
    assert (lat.meta.source_sample_rate, lat.meta.num_samples, lat.channels) == (48000, 62400, 2)
    decoded, rate = decode_to_array(engine, lat)
    assert rate == 48000 and decoded.shape == (2, 62400)
    decoded, rate = decode_to_array(engine, lat, OutputOptions(sample_rate=16000))
    assert rate == 16000 and decoded.shape == (2, 20800)


class SyntheticSource(AudioSource):
    """A long sine generated block by block (nothing long is ever held)."""

    def __init__(self, seconds: float) -> None:
        super().__init__("synthetic", 1, 44100, int(seconds * 44100))

    def _source_blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.num_samples, 44100):
            t = np.arange(start, min(start + 44100, self.num_samples)) / 44100
            yield (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]


def _peak_memory(seconds: float, folder: Path) -> tuple[int, int]:
    """Peak traced memory (numpy buffers) of encoding then decoding ``seconds`` of audio."""
    model = AlignmentModel(decoded_gain=1e-3)
    engine = _engine(model, chunk_seconds=10.0)
    tracemalloc.start()
    (outcome,) = engine.run([engine.encode_job(SyntheticSource(seconds))])
    _, encode_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    target = folder / f"{seconds}.wav"
    (decoded,) = engine.run([engine.decode_job(outcome.result, target, OutputOptions())])
    _, decode_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert outcome.ok and decoded.ok
    assert model.encoded_windows == outcome.result.frames // 108 + 1
    assert soundfile.info(target).frames == seconds * 44100
    assert outcome.result.meta.source_loudness_lufs == pytest.approx(-23.7, abs=0.1)
    return encode_peak, decode_peak


def test_memory_follows_the_chunk_not_the_file(tmp_path: Path) -> None:
    short = _peak_memory(60.0, tmp_path)
    long = _peak_memory(600.0, tmp_path)  # 10 minutes: 106 MB as float32
    window_bytes = 124 * H * 4  # one 10 s window (108 frames + 2 x 8 margin) of float32 audio
    for short_peak, long_peak in zip(short, long, strict=True):
        # The reader thread may be a few windows ahead, depending on thread timing.
        assert long_peak < short_peak + 4 * window_bytes, (short, long)
        assert long_peak < 10 * window_bytes, (short, long)  # the file is 52 windows


def test_batches_mix_files_and_one_bad_file_does_not_stop_the_others() -> None:
    class Broken(SyntheticSource):
        def _source_blocks(self) -> Iterator[np.ndarray]:
            yield np.zeros((1, 44100), np.float32)
            yield np.full((1, 100), np.inf, np.float32)

    model = AlignmentModel()
    engine = _engine(model, chunk_seconds=0.5, batch_size=3)
    jobs = [
        engine.encode_job(ArraySource("a", tone(0.3), 44100)),
        engine.encode_job(Broken(2.0)),
        engine.encode_job(ArraySource("b", tone(1.2, channels=2), 44100)),
    ]
    outcomes = list(engine.run(jobs))
    assert {o.job.name: o.ok for o in outcomes} == {"a": True, "synthetic": False, "b": True}
    failed = next(o for o in outcomes if not o.ok)
    assert "synthetic: audio contains NaN or Inf" in str(failed.error)


def test_decoding_refuses_latents_of_another_model(tiny_model_path: Path) -> None:
    engine = _engine(AlignmentModel(), chunk_seconds=0.5)
    lat = encode_array(engine, tone(0.3), 44100, "x")
    tiny = Engine(load_model(tiny_model_path), EngineOptions(precision="fp32"))
    with pytest.raises(LincaeError, match="encoded with model 'alignment'"):
        tiny.decode_job(lat, None)


# -- with the tiny random model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> torch.nn.Module:
    return load_model(tiny_model_path).optimize_for_inference("fp32")


@pytest.fixture
def one_thread() -> Iterator[None]:
    # With several threads, CPU kernels split a batch differently depending on where an
    # example sits in it, which changes the last bits; one thread makes that exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_file_gives_the_same_results_alone_or_batched_with_others(
    tiny: object, batch_size: int, one_thread: None
) -> None:
    song = tone(0.4, channels=2, seed=1)
    engine = _engine(tiny, chunk_seconds=0.5, batch_size=batch_size)
    (alone,) = engine.run([engine.encode_job(ArraySource("song", song, 44100))])
    others = [ArraySource("short", tone(0.2, seed=2), 44100), ArraySource("song", song, 44100)]
    batched = list(engine.run([engine.encode_job(source) for source in others]))
    assert np.array_equal(batched[1].result.latents, alone.result.latents)
    if batch_size == 1:
        return  # decoding is checked once, with examples at shifted places in the batch
    lat = alone.result
    decoded_alone, _ = decode_to_array(engine, lat)
    jobs = [engine.decode_job(batched[0].result, None), engine.decode_job(lat, None)]
    decoded_batched = list(engine.run(jobs))[1].result.audio
    np.testing.assert_array_equal(decoded_batched, decoded_alone)
    reseeded, _ = decode_to_array(_engine(tiny, chunk_seconds=0.5, seed=1), lat)
    assert not np.allclose(reseeded, decoded_alone)


def _boundary_frames(total: int, chunk: int, margin: int) -> tuple[list[int], list[int]]:
    """Frames next to a core boundary, and the other frames, away from the file's ends."""
    central = range(margin + chunk, total - margin - chunk)
    near = [k for k in central if min(k % chunk, chunk - k % chunk) <= 1]
    return near, [k for k in central if k not in near]


def test_no_seams_in_latents_at_chunk_boundaries(tiny: object) -> None:
    # Steady noise, so that every chunk sees the same statistics; the reference is one
    # forward pass over the whole file with the same time alignment.
    frames = 60
    noise = (0.1 * np.random.default_rng(0).standard_normal(frames * H)).astype(np.float32)
    engine = _engine(tiny, chunk_seconds=0.5)
    chunked = encode_array(engine, noise[None], 44100, "noise").latents[0]
    with torch.inference_mode():
        whole = tiny.encode(torch.from_numpy(noise)[None])[0]  # type: ignore[attr-defined]
    error = ((torch.from_numpy(chunked) - whole).norm(dim=0) / whole.norm(dim=0).mean()).numpy()
    near, far = _boundary_frames(frames, engine.spec.chunk_frames, engine.spec.margin_frames)
    assert len(near) >= 8 and len(far) >= 8
    assert error[near].mean() < 1.5 * error[far].mean(), (error[near], error[far])
    assert error[far].mean() < 0.3  # and chunking changes little anywhere


@pytest.mark.slow
def test_no_seams_in_decoded_audio_at_chunk_boundaries(tiny: object) -> None:
    frames = 33
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(frames * H)).astype(np.float32)
    engine = _engine(tiny, chunk_seconds=0.5)
    lat = encode_array(engine, noise[None], 44100, "noise")
    chunked, _ = decode_to_array(engine, lat)
    with torch.inference_mode():
        noise = decoding_noise(tiny.config, 0, 0, frames)  # type: ignore[attr-defined]
        initial = noise[None] * tiny.config.sigma_max  # type: ignore[attr-defined]
        whole = tiny.decode(lat.latents, initial_noise=initial)[0, : frames * H]  # type: ignore[attr-defined]
    error = np.sqrt(((chunked[0] - whole.numpy()) ** 2).reshape(frames, H).mean(axis=1))
    error /= np.sqrt(np.mean(whole.numpy() ** 2))
    near, far = _boundary_frames(frames, engine.spec.chunk_frames, engine.spec.margin_frames)
    assert error[near].mean() < 1.5 * error[far].mean(), (error[near], error[far])


# -- the library API ------------------------------------------------------------------------


def test_library_api_round_trip(tiny_model_path: Path) -> None:
    model = lincae_cli.load_model(str(tiny_model_path), device="cpu", precision="fp32")
    audio = torch.from_numpy(tone(0.3, 22050, channels=1))
    lat = lincae_cli.encode_audio(model, audio[0], 22050, chunk_seconds=0.5)
    assert isinstance(lat, lincae_cli.LatentFile)
    assert (lat.channels, lat.meta.source_sample_rate, lat.meta.num_samples) == (1, 22050, 6615)
    quieter = lincae_cli.gain(lat, lincae_cli.parse_gain("-6dB"))
    decoded, rate = lincae_cli.decode_latents(model, quieter, chunk_seconds=0.5)
    assert rate == 22050 and decoded.shape == (1, 6615) and decoded.dtype == np.float32
    assert np.isfinite(decoded).all() and np.abs(decoded).max() > 0


def test_import_is_fast_and_free_of_side_effects() -> None:
    code = (
        "import sys, lincae_cli; "
        "heavy = [m for m in ('torch', 'numpy', 'soundfile', 'typer') if m in sys.modules]; "
        "print(heavy, lincae_cli.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"[] {lincae_cli.__version__}"


def test_encoding_and_decoding_import_neither_sympy_nor_scipy(tiny_model_path: Path) -> None:
    # torch.broadcast_shapes imports sympy on its first call (0.33 s of every CLI run), and
    # pyloudnorm imports scipy.signal (0.7 s): neither is needed to encode or decode.
    code = (
        "import sys, torch, lincae_cli\n"
        f"model = lincae_cli.load_model({str(tiny_model_path)!r}, device='cpu', precision='fp32')\n"
        "audio = torch.sin(torch.arange(44100) * 0.05).numpy()\n"
        "lat = lincae_cli.encode_audio(model, audio, 22050)\n"
        "assert lat.meta.source_loudness_lufs is not None\n"
        "lincae_cli.decode_latents(model, lat)\n"
        "print([m for m in ('sympy', 'scipy.signal', 'pyloudnorm') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_rich_progress_draws_batches_and_realtime() -> None:
    from rich.console import Console

    from lincae_cli.engine.progress import RichProgress

    buffer = io.StringIO()
    progress = RichProgress("encoding", Console(file=buffer, force_terminal=True, width=120))
    engine = _engine(AlignmentModel(), chunk_seconds=0.5)
    jobs = [engine.encode_job(ArraySource(name, tone(0.8), 44100)) for name in "ab"]
    assert all(outcome.ok for outcome in engine.run(jobs, progress))
    text = buffer.getvalue()
    assert "batches" in text and "encoding" in text and "realtime" in text
