"""Oracle separation by latent subtraction: Dec(Enc(mix) − Enc(mix − s)) against each stem s.

Pure functions of an `encode` / `decode` pair (codec.py), like linearity.py, which runs them in
`evaluate`; definitions in docs/metrics.md. With the model's silence latent b the estimate
Dec(Enc(mix) − Enc(mix − s) + b) is scored too (affine.py, docs/latent-algebra.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lincae_cli.eval.affine import AFFINE_PREFIX, affine_term
from lincae_cli.eval.codec import Decode, Encode
from lincae_cli.eval.metrics import (
    aligned,
    aligned_mss,
    example_mean,
    matched_ratio,
    mss,
    si_sdr_db,
)


@dataclass
class SeparationScores:
    """Per-example scores of oracle separation for one stem (lists over active segments)."""

    mss: list[float] = field(default_factory=list)
    si_sdr_db: list[float] = field(default_factory=list)
    reconstruction_mss: list[float] = field(default_factory=list)
    affine_mss: list[float] = field(default_factory=list)
    affine_si_sdr_db: list[float] = field(default_factory=list)

    def extend(self, other: SeparationScores) -> None:
        """Append every list of `other` to this one's (pooling stems)."""
        for name in (f.name for f in dataclasses.fields(self)):
            getattr(self, name).extend(getattr(other, name))

    def summary(self) -> dict[str, float]:
        """Keys `mss`, `si_sdr_db`, `ratio` (mean MSS / mean MSS of Dec(Enc(stem))), `count`,
        and `affine_mss`, `affine_si_sdr_db`, `affine_ratio` (NaN when not measured)."""
        reconstruction = example_mean(torch.tensor(self.reconstruction_mss))
        summary = {"count": float(len(self.mss))}
        for prefix in ("", AFFINE_PREFIX):
            mean_mss = example_mean(torch.tensor(getattr(self, f"{prefix}mss")))
            summary[f"{prefix}mss"] = mean_mss
            summary[f"{prefix}si_sdr_db"] = example_mean(
                torch.tensor(getattr(self, f"{prefix}si_sdr_db"))
            )
            summary[f"{prefix}ratio"] = matched_ratio(mean_mss, reconstruction)
        return summary


def separation(
    encode: Encode,
    decode: Decode,
    stems: torch.Tensor,
    active: torch.Tensor,
    margin: int = 0,
    stem_latents: torch.Tensor | None = None,
    mixture_latents: torch.Tensor | None = None,
    silence: torch.Tensor | None = None,
) -> list[SeparationScores]:
    """Oracle separation by latent subtraction, one `SeparationScores` per stem index.

    `stems` is `[songs, stems, samples]` (the mixture is their sum), `active` `[songs, stems]`
    marks the stems to score (those with energy). The estimate of stem s is
    Dec(Enc(mix) − Enc(mix − s)), scored by MSS and SI-SDR against s; its reconstruction
    Dec(Enc(s)) gives the denominator of the separation ratio. With `silence` (b) the affine
    estimate Dec(Enc(mix) − Enc(mix − s) + b) is scored too.
    """
    songs, count, samples = stems.shape
    mixtures = stems.sum(1)
    if stem_latents is None:
        stem_latents = encode(stems.reshape(songs * count, samples)).unflatten(0, (songs, count))
    if mixture_latents is None:
        mixture_latents = encode(mixtures)
    song_index, stem_index = torch.nonzero(active, as_tuple=True)
    scores = [SeparationScores() for _ in range(count)]
    if song_index.numel() == 0:
        return scores
    targets = stems[song_index, stem_index]
    residual_latents = encode(mixtures[song_index] - targets)
    differences = mixture_latents[song_index] - residual_latents
    reconstructions = decode(stem_latents[song_index, stem_index])
    reconstruction_mss = aligned_mss(reconstructions, targets, margin).tolist()
    ways = [("", differences)]
    if silence is not None:
        ways.append((AFFINE_PREFIX, differences + affine_term(0.0, silence)))
    for prefix, latents in ways:
        estimate, reference = aligned(decode(latents), targets, margin)
        separated_mss = mss(estimate, reference).tolist()
        separated_si_sdr = si_sdr_db(estimate, reference).tolist()
        for position, stem in enumerate(stem_index.tolist()):
            getattr(scores[stem], f"{prefix}mss").append(separated_mss[position])
            getattr(scores[stem], f"{prefix}si_sdr_db").append(separated_si_sdr[position])
    for position, stem in enumerate(stem_index.tolist()):
        scores[stem].reconstruction_mss.append(reconstruction_mss[position])
    return scores


def separate_one(encode: Encode, decode: Decode, stems: torch.Tensor, stem: int) -> torch.Tensor:
    """Dec(Enc(mix) − Enc(mix − s)) `[samples]` for stems `[stems, samples]` of one song."""
    mixture = stems.sum(0, keepdim=True)
    latents = encode(torch.cat((mixture, mixture - stems[stem : stem + 1])))
    return decode((latents[0] - latents[1]).unsqueeze(0))[0]


@dataclass
class SeparationExample:
    """One stem's oracle separation in song segment `song`, audio `[samples]` each."""

    stem_name: str
    song: int
    mixture: torch.Tensor
    stem: torch.Tensor
    separated: torch.Tensor


def example_separations(
    encode: Encode,
    decode: Decode,
    stems: torch.Tensor,
    active: torch.Tensor,
    stem_names: Sequence[str],
) -> list[SeparationExample]:
    """A separation of every stem that is active somewhere, in stem order.

    Stems take the song segment where the most stems are active, so that their examples share
    a mixture; a stem silent there takes the first segment where it is active.
    """
    examples: list[SeparationExample] = []
    if not bool(active.any()):
        return examples
    shared = int(active.sum(1).argmax())  # the first of the fullest segments
    for stem, name in enumerate(stem_names):
        songs = torch.nonzero(active[:, stem]).flatten().tolist()
        if not songs:
            continue
        song = shared if bool(active[shared, stem]) else songs[0]
        separated = separate_one(encode, decode, stems[song], stem)
        examples.append(
            SeparationExample(name, song, stems[song].sum(0), stems[song, stem], separated)
        )
    return examples
