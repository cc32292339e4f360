"""The `lincae` JSON document of a `.lat` file: `LatentMeta`, its parsing and its checks.

docs/lat-format.md specifies every key; `latents/latfile.py` puts this document and the
latents tensor in the safetensors container.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lincae_cli.audio.rates import resampled_length
from lincae_cli.errors import LincaeError
from lincae_cli.latents.framing import check_framing, expected_frames, framing_of
from lincae_cli.version import __version__

FORMAT_NAME = "lincae-latent"
FORMAT_VERSION = "1.1"
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Sanity bound on source_sample_rate / model_sample_rate (either way): decoding resamples the
# model-rate audio to the source rate, so a corrupt rate could turn a few frames into gigabytes.
MAX_RATE_RATIO = 256


@dataclass(frozen=True)
class LatentMeta:
    """Everything a `.lat` file says about its latents (the JSON document under ``lincae``).

    ``latent_hop_samples`` counts samples at ``model_sample_rate``: frame ``k`` covers the
    source, resampled to the model rate, from sample ``k * latent_hop_samples`` on.
    ``num_samples`` is the original length at ``source_sample_rate``. ``offset_samples`` (also at
    ``source_sample_rate``; format 1.1, 0 when absent) is how much of the decoded audio comes
    before the first sample kept: a trim that does not start on a latent frame keeps the frame
    and records the rest here. ``offset_samples + num_samples`` fixes the number of frames
    (`expected_frames`). ``silence_latent`` (format 1.1, optional): the model's latent of
    silence ``b`` (one frame, stored values), for the affine-exact operations, which
    ``affine_default`` (format 1.1, false when absent) says the model prefers.
    """

    model_name: str
    model_sha256: str
    scale_factor: float
    model_sample_rate: int
    source_sample_rate: int
    num_samples: int
    channels: int
    latent_rate_hz: float
    latent_hop_samples: int
    offset_samples: int = 0
    chunking: dict[str, Any] = field(default_factory=dict)
    source_loudness_lufs: float | None = None
    loudness_is_estimate: bool = False
    silence_latent: list[float] | None = None
    affine_default: bool = False
    provenance: list[dict[str, Any]] = field(default_factory=list)
    lincae_version: str = __version__
    format_version: str = FORMAT_VERSION

    @property
    def duration_seconds(self) -> float:
        """Length of the original audio in seconds."""
        return self.num_samples / self.source_sample_rate

    @property
    def span_samples(self) -> int:
        """Source-rate samples the latents decode to: ``offset_samples + num_samples``."""
        return self.offset_samples + self.num_samples

    @property
    def model_rate_samples(self) -> int:
        """The span resampled to ``model_sample_rate`` (rounded half up, as soxr)."""
        return resampled_length(self.span_samples, self.source_sample_rate, self.model_sample_rate)

    @property
    def expected_frames(self) -> int:
        """Frames the latents must have (the rule: latents/framing.py)."""
        return expected_frames(self.chunking, self.model_rate_samples, self.latent_hop_samples)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document stored under the ``lincae`` metadata key."""
        document = dataclasses.asdict(self)
        document["format"] = FORMAT_NAME
        return document


def provenance_entry(op: str, **fields: Any) -> dict[str, Any]:
    """One provenance record: ``{"op": op, **fields, "lincae_version": ..., "time": ...}``.

    ``time`` is UTC, ISO 8601, to the second. ``fields`` must be JSON-serialisable.
    """
    entry: dict[str, Any] = {"op": op}
    entry.update(fields)
    entry["lincae_version"] = __version__
    entry["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return entry


def meta_from_document(document: dict[str, Any], name: str) -> LatentMeta:
    """Build `LatentMeta` from the JSON document, checking every field's type.

    Keys unknown to this version are ignored: minor versions may add them.
    """

    def get(key: str, kind: str) -> Any:
        if key not in document:
            raise LincaeError(f"{name}: corrupt .lat file (metadata lacks {key!r})")
        value = document[key]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "dict": isinstance(value, dict),
            "list": isinstance(value, list),
            "float|None": value is None
            or (isinstance(value, int | float) and not isinstance(value, bool)),
        }[kind]
        if not ok:
            raise LincaeError(
                f"{name}: corrupt .lat file (metadata {key!r} should be {kind}, got {value!r})"
            )
        if kind == "float":
            try:
                return float(value)
            except OverflowError:
                raise LincaeError(
                    f"{name}: corrupt .lat file (metadata {key!r} too large)"
                ) from None
        return value

    provenance = get("provenance", "list")
    if not all(isinstance(entry, dict) for entry in provenance):
        raise LincaeError(f"{name}: corrupt .lat file (provenance entries must be objects)")
    loudness = get("source_loudness_lufs", "float|None")
    return LatentMeta(
        model_name=get("model_name", "str"),
        model_sha256=get("model_sha256", "str"),
        scale_factor=get("scale_factor", "float"),
        model_sample_rate=get("model_sample_rate", "int"),
        source_sample_rate=get("source_sample_rate", "int"),
        num_samples=get("num_samples", "int"),
        offset_samples=get("offset_samples", "int") if "offset_samples" in document else 0,
        channels=get("channels", "int"),
        latent_rate_hz=get("latent_rate_hz", "float"),
        latent_hop_samples=get("latent_hop_samples", "int"),
        chunking=get("chunking", "dict"),
        source_loudness_lufs=None if loudness is None else get("source_loudness_lufs", "float"),
        loudness_is_estimate=get("loudness_is_estimate", "bool"),
        silence_latent=_silence_latent(document.get("silence_latent"), name),
        affine_default=get("affine_default", "bool") if "affine_default" in document else False,
        provenance=provenance,
        lincae_version=get("lincae_version", "str"),
        format_version=get("format_version", "str"),
    )


def _silence_latent(value: object, name: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
    ):
        raise LincaeError(f"{name}: corrupt .lat file (silence_latent must be a list of numbers)")
    return [float(x) for x in value]


def validate_meta(meta: LatentMeta, name: str) -> None:
    """Value checks (types are checked on parse); raise `LincaeError` naming ``name``."""
    if not _SHA256_PATTERN.fullmatch(meta.model_sha256):
        raise LincaeError(f"{name}: model_sha256 must be 64 lowercase hex digits")
    check_framing(meta.chunking, meta.latent_hop_samples, name)
    positive_ints = {
        "model_sample_rate": meta.model_sample_rate,
        "source_sample_rate": meta.source_sample_rate,
        "num_samples": meta.num_samples,
        "channels": meta.channels,
        "latent_hop_samples": meta.latent_hop_samples,
    }
    for key, value in positive_ints.items():
        if value < 1:
            raise LincaeError(f"{name}: metadata {key} must be positive, got {value}")
    if meta.offset_samples < 0:
        raise LincaeError(f"{name}: offset_samples must be >= 0, not {meta.offset_samples}")
    if meta.offset_samples and framing_of(meta.chunking) is None:
        raise LincaeError(f"{name}: offset_samples needs the time framing keys in chunking")
    ratio = meta.source_sample_rate / meta.model_sample_rate
    if not 1 / MAX_RATE_RATIO <= ratio <= MAX_RATE_RATIO:
        raise LincaeError(
            f"{name}: source_sample_rate {meta.source_sample_rate} Hz is implausible for "
            f"model_sample_rate {meta.model_sample_rate} Hz (more than {MAX_RATE_RATIO}x apart)"
        )
    finite_positive = {"scale_factor": meta.scale_factor, "latent_rate_hz": meta.latent_rate_hz}
    for key, value in finite_positive.items():
        if not (math.isfinite(value) and value > 0):
            raise LincaeError(f"{name}: metadata {key} must be finite and positive, got {value}")
    expected_rate_hz = meta.model_sample_rate / meta.latent_hop_samples
    if not math.isclose(meta.latent_rate_hz, expected_rate_hz, rel_tol=1e-6):
        raise LincaeError(
            f"{name}: latent_rate_hz {meta.latent_rate_hz} disagrees with model_sample_rate / "
            f"latent_hop_samples = {expected_rate_hz}"
        )
    loudness = meta.source_loudness_lufs
    if loudness is not None and not math.isfinite(loudness):
        raise LincaeError(f"{name}: source_loudness_lufs must be finite or null, got {loudness}")
