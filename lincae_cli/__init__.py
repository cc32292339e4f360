"""lincae: encode audio into linear latents, operate on them, decode them back.

The library API; everything heavy is imported on first use, so ``import lincae_cli`` is fast::

    import lincae_cli

    model = lincae_cli.load_model()  # the default model; or a name, hf://..., a path
    lat = lincae_cli.encode_audio(model, audio, 44100)  # audio [channels, samples] or [samples]
    louder = lincae_cli.gain(lat, lincae_cli.parse_gain("+3dB"))
    audio, sample_rate = lincae_cli.decode_latents(model, louder)
    lincae_cli.write_lat("song.lat", lat)
    result = lincae_cli.encode_files(["music/"], "latents/")  # folders mirrored; a BatchResult
    crops = lincae_cli.LatentDataset("latents/", crop_frames=256)  # a torch Dataset for training

Long audio is processed in overlapping chunks exactly as by the `lincae` command, so results
match the CLI's for the same settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lincae_cli.version import __version__

if TYPE_CHECKING:
    import numpy as np

    from lincae_cli.latents.latfile import LatentFile
    from lincae_cli.nn.autoencoder import ConsistencyAutoencoder

# Re-exported names, imported on first access: name -> module.
_LAZY = {
    "LatentFile": "lincae_cli.latents.latfile",
    "LatentMeta": "lincae_cli.latents.latfile",
    "read_lat": "lincae_cli.latents.latfile",
    "write_lat": "lincae_cli.latents.latfile",
    "mix": "lincae_cli.latents.ops",
    "gain": "lincae_cli.latents.ops",
    "subtract": "lincae_cli.latents.ops",
    "parse_gain": "lincae_cli.latents.ops",
    "LincaeError": "lincae_cli.errors",
    "encode_files": "lincae_cli.batch.files",
    "decode_files": "lincae_cli.batch.files",
    "BatchResult": "lincae_cli.batch.result",
    "LatentDataset": "lincae_cli.data",
}

__all__ = ["__version__", "decode_latents", "encode_audio", "load_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lincae_cli' has no attribute {name!r}")


def load_model(
    spec: str | None = None, device: str = "auto", precision: str = "auto"
) -> ConsistencyAutoencoder:
    """Load a model ready for inference.

    ``spec``: a registered name (see ``lincae models``), ``hf://owner/repo/file.safetensors``,
    or a path; None is the default model. ``device``: auto, cpu, cuda, cuda:N or mps.
    ``precision``: auto (bf16 where native), fp32, bf16 or fp16.
    """
    from lincae_cli.engine.inference import load_inference_model

    return load_inference_model(spec, device, precision)


def encode_audio(
    model: ConsistencyAutoencoder,
    audio: Any,
    sample_rate: int,
    chunk_seconds: float | None = None,
    name: str = "<array>",
) -> LatentFile:
    """Encode audio ``[channels, samples]`` or ``[samples]`` (numpy or torch, any rate) into a
    `LatentFile`: per-channel latents, the source rate, length and loudness."""
    from lincae_cli.engine.inference import encode_array

    return encode_array(_engine(model, chunk_seconds), _as_numpy(audio), sample_rate, name)


def decode_latents(
    model: ConsistencyAutoencoder,
    lat: LatentFile,
    sample_rate: int | None = None,
    seed: int = 0,
    chunk_seconds: float | None = None,
    restore_loudness: bool | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a `LatentFile` into (float32 audio ``[channels, samples]``, sample rate).

    The audio has the original length and, unless ``sample_rate`` is given, the original
    rate. The same ``seed`` gives the same audio. ``restore_loudness``: bring it to the
    loudness ``lat`` records (None: the model's default, as ``lincae decode``).
    """
    from lincae_cli.audio.sink import OutputOptions
    from lincae_cli.engine.inference import decode_to_array

    engine = _engine(model, chunk_seconds, seed=seed)
    options = OutputOptions(sample_rate=sample_rate, restore_loudness=restore_loudness)
    return decode_to_array(engine, lat, options)


def _engine(model: ConsistencyAutoencoder, chunk_seconds: float | None, seed: int = 0) -> Any:
    from lincae_cli.engine.inference import Engine, EngineOptions

    options = EngineOptions(chunk_seconds=chunk_seconds, seed=seed)
    return Engine(model, options)


def _as_numpy(audio: Any) -> Any:
    import numpy as np

    if hasattr(audio, "detach"):  # a torch tensor
        audio = audio.detach().float().cpu().numpy()
    return np.asarray(audio, dtype=np.float32)
