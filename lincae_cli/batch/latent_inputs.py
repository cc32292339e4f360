"""Latents to decode as files hold them: a `.lat`, a `.npy` beside its sidecar, or bare latents
(a `.npy` alone) that take their metadata from the model given for them once it is loaded; and
the model that decodes each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lincae_cli.batch.inputs import InputFile
from lincae_cli.errors import LincaeError
from lincae_cli.paths import is_npy_path

if TYPE_CHECKING:
    from lincae_cli.engine.inference import Engine
    from lincae_cli.latents.latfile import LatentFile
    from lincae_cli.latents.npy import BareLatents


def read_latents(
    item: InputFile, model: str | None, sample_rate: int | None
) -> tuple[LatentFile | BareLatents, str]:
    """The latents of a .lat or .npy input and the model spec that decodes them: ``model``
    (``--model``), else the one recorded. A .npy without its sidecar is bare latents, which
    need ``model`` and ``sample_rate`` (``--sample-rate``, the rate of their audio)."""
    from lincae_cli.latents.latfile import read_lat
    from lincae_cli.latents.npy import BareLatents, load_npy, sidecar_path

    if item.path is not None and is_npy_path(item.path):
        sidecar = sidecar_path(item.path)
        if not sidecar.exists():
            latents, _ = load_npy(item.path)
            if model is None or sample_rate is None:
                raise LincaeError(
                    f"{item.name}: no sidecar {sidecar.name}, so the model and sample rate of "
                    f"these latents are unknown; give --model MODEL and --sample-rate HZ"
                )
            return BareLatents(latents, sample_rate, item.name), model
    lat = read_lat(item.arg)
    return lat, model or decoding_model_for(lat, item.name)


def decoding_model_for(lat: LatentFile, name: str) -> str:
    """The model recorded in a .lat file, when it is a registered name (else an error)."""
    from lincae_cli.hub.registry import REGISTRY

    if lat.meta.model_name in REGISTRY:
        return lat.meta.model_name
    raise LincaeError(
        f"{name}: encoded with model '{lat.meta.model_name}', which is not a registered model; "
        f"pass its file with --model PATH (a `lincae train` run's is RUN_DIR/model.safetensors)"
    )


def with_model(lat: LatentFile | BareLatents, engine: Engine) -> LatentFile:
    """``lat``, or bare latents with the metadata of ``engine``'s model."""
    from lincae_cli.latents.latfile import LatentFile, LatentMeta

    if isinstance(lat, LatentFile):
        return lat
    framing, config = engine.framing, engine.config
    model = LatentMeta(
        model_name=framing.model_name,
        model_sha256=framing.model_sha256,
        scale_factor=config.scale_factor,
        model_sample_rate=config.sample_rate,
        source_sample_rate=config.sample_rate,
        num_samples=1,
        channels=1,
        latent_rate_hz=config.latent_rate_hz,
        latent_hop_samples=framing.latent_hop,
        chunking=framing.stft_metadata,
        silence_latent=framing.silence_latent,
        affine_default=framing.affine_default,
    )
    return lat.with_model(model)
