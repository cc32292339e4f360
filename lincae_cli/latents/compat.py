"""Whether latent files can be added, joined or placed together: the one check every
operation on several files makes (`ops.mix`/`subtract` and `edit.place`/`concat`)."""

from __future__ import annotations

from collections.abc import Sequence

from lincae_cli.errors import LincaeError
from lincae_cli.latents.framing import framing_of
from lincae_cli.latents.latfile import LatentFile


def check_compatible(
    a: LatentFile, b: LatentFile, name_a: str = "first file", name_b: str = "second file"
) -> None:
    """Raise `LincaeError` listing every difference that makes ``a`` and ``b`` impossible to add.

    Files must come from the same model (weights hash, sample rate, hop, scale factor) and
    have the same number of audio channels and latent channels. Frame counts are checked by
    `mix`, which can pad.
    """
    differences = []
    if a.meta.model_sha256 != b.meta.model_sha256:
        differences.append(
            f"made by different models ({name_a}: {a.meta.model_name} "
            f"sha256 {a.meta.model_sha256[:12]}, {name_b}: {b.meta.model_name} "
            f"sha256 {b.meta.model_sha256[:12]})"
        )
    pairs = [
        ("model_sample_rate", a.meta.model_sample_rate, b.meta.model_sample_rate),
        ("latent_hop_samples", a.meta.latent_hop_samples, b.meta.latent_hop_samples),
        ("scale_factor", a.meta.scale_factor, b.meta.scale_factor),
        ("channels", a.channels, b.channels),
        ("latent_channels", a.latent_channels, b.latent_channels),
    ]
    for key, value_a, value_b in pairs:
        if value_a != value_b:
            differences.append(f"{key} differs ({name_a}: {value_a}, {name_b}: {value_b})")
    if framing_of(a.meta.chunking) != framing_of(b.meta.chunking):
        differences.append(
            "framed differently in time (one was encoded before lincae took the reference "
            "packages' framing; re-encode it)"
        )
    if differences:
        raise LincaeError(
            f"{name_a} and {name_b} are incompatible latent files: " + "; ".join(differences)
        )


def check_all_compatible(files: Sequence[LatentFile], names: Sequence[str]) -> None:
    """`check_compatible` for each file against the first."""
    for file, name in zip(files[1:], names[1:], strict=True):
        check_compatible(files[0], file, names[0], name)
