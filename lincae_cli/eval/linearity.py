"""The linearity evaluation behind `lincae eval`, as pure functions of an encoder and a decoder.

Every function takes an `encode` callable (audio `[batch, samples]` -> latents
`[batch, channels, frames]`) and a `decode` callable (latents -> audio `[batch, samples']`) plus
audio tensors, and returns numbers (means over examples). Nothing here reads files or knows about
the network, so the maths can be checked with toy models (an identity, a squaring encoder).
codec.py turns a ConsistencyAutoencoder into such a pair of callables; the trainer's validation
runs `reconstruction`, `homogeneity` and `additivity` from here too.

Decoded audio is compared with its reference by `metrics.aligned`, less `margin` samples at each
end. The definitions of every metric and ratio are in docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lincae_cli.eval.codec import Decode, Encode
from lincae_cli.eval.metrics import aligned, example_mean, mss, relative_l2, si_sdr_db, snr_db
from lincae_cli.eval.references import REFERENCE_KEYS, reference_points

HOMOGENEITY_GAINS = (0.25, 0.5, 2.0)
MSS_FLOOR = 1e-3
"""MSS values below this count as this in ratios: a ratio of two such values is 1 (0/0)."""


def gain_label(gain: float) -> str:
    """`0.25` -> `"a0.25"`, `2.0` -> `"a2"`: the suffix of per-gain metric keys."""
    return f"a{gain:g}"


def matched_ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator` of two mean MSS values, each floored at `MSS_FLOOR`.

    The floor makes 0/0 (a perfect model) a ratio of 1 and keeps x/0 finite (x / MSS_FLOOR).
    NaN (no examples) stays NaN.
    """
    if math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return max(numerator, MSS_FLOOR) / max(denominator, MSS_FLOOR)


def _mss(estimate: torch.Tensor, reference: torch.Tensor, margin: int) -> torch.Tensor:
    return mss(*aligned(estimate, reference, margin))


def reconstruction(
    encode: Encode,
    decode: Decode,
    clips: torch.Tensor,
    margin: int = 0,
    decoded: torch.Tensor | None = None,
) -> dict[str, float]:
    """SNR, SI-SDR and MSS of Dec(Enc(x)) against x, for clips `[batch, samples]`.

    Keys: `snr_db`, `si_sdr_db`, `mss`. `decoded` (Dec(Enc(clips))) may be passed to save work.
    """
    if decoded is None:
        decoded = decode(encode(clips))
    estimate, reference = aligned(decoded, clips, margin)
    return {
        "snr_db": example_mean(snr_db(estimate, reference)),
        "si_sdr_db": example_mean(si_sdr_db(estimate, reference)),
        "mss": example_mean(mss(estimate, reference)),
    }


def homogeneity(
    encode: Encode,
    decode: Decode,
    clips: torch.Tensor,
    gain: float,
    margin: int = 0,
    latents: torch.Tensor | None = None,
) -> dict[str, float]:
    """How well scaling audio by `gain` and scaling its latents agree, for clips `[batch, samples]`.

    Keys: `decoder_mss` = MSS(Dec(a·Enc(x)), a·x); `encoder_rel_l2` =
    ‖Enc(a·x) − a·Enc(x)‖ / ‖a·Enc(x)‖; `ratio` = decoder_mss / MSS(Dec(Enc(a·x)), a·x).
    """
    if latents is None:
        latents = encode(clips)
    scaled_audio = gain * clips
    scaled_latents = gain * latents
    latents_of_scaled = encode(scaled_audio)
    from_scaled_latents = example_mean(_mss(decode(scaled_latents), scaled_audio, margin))
    matched = example_mean(_mss(decode(latents_of_scaled), scaled_audio, margin))
    return {
        "decoder_mss": from_scaled_latents,
        "encoder_rel_l2": example_mean(relative_l2(latents_of_scaled, scaled_latents)),
        "ratio": matched_ratio(from_scaled_latents, matched),
    }


def additivity(
    encode: Encode,
    decode: Decode,
    parts: torch.Tensor,
    margin: int = 0,
    part_latents: torch.Tensor | None = None,
    sum_latents: torch.Tensor | None = None,
    sum_decoded: torch.Tensor | None = None,
) -> dict[str, float]:
    """How well adding audio and adding latents agree, for parts `[batch, parts, samples]`.

    With u = Σ parts (summed over the parts axis): keys `decoder_mss` = MSS(Dec(Σ Enc(part)), u);
    `encoder_rel_l2` = ‖Enc(u) − Σ Enc(part)‖ / ‖Enc(u)‖; `ratio` = decoder_mss /
    MSS(Dec(Enc(u)), u). `part_latents` `[batch, parts, C, L]`, `sum_latents` (Enc(u)) and
    `sum_decoded` (Dec(Enc(u))) may be passed to save work.
    """
    batch, count, samples = parts.shape
    total = parts.sum(1)
    if part_latents is None:
        part_latents = encode(parts.reshape(batch * count, samples)).unflatten(0, (batch, count))
    if sum_latents is None:
        sum_latents = encode(total)
    if sum_decoded is None:
        sum_decoded = decode(sum_latents)
    summed_latents = part_latents.sum(1)
    from_summed_latents = example_mean(_mss(decode(summed_latents), total, margin))
    matched = example_mean(_mss(sum_decoded, total, margin))
    return {
        "decoder_mss": from_summed_latents,
        "encoder_rel_l2": example_mean(relative_l2(summed_latents, sum_latents)),
        "ratio": matched_ratio(from_summed_latents, matched),
    }


@dataclass
class SeparationScores:
    """Per-example scores of oracle separation for one stem (lists over active segments)."""

    mss: list[float] = field(default_factory=list)
    si_sdr_db: list[float] = field(default_factory=list)
    reconstruction_mss: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Keys `mss`, `si_sdr_db`, `ratio` (mean MSS / mean MSS of Dec(Enc(stem))), `count`."""
        mean_mss = example_mean(torch.tensor(self.mss))
        return {
            "mss": mean_mss,
            "si_sdr_db": example_mean(torch.tensor(self.si_sdr_db)),
            "ratio": matched_ratio(mean_mss, example_mean(torch.tensor(self.reconstruction_mss))),
            "count": float(len(self.mss)),
        }


def separation(
    encode: Encode,
    decode: Decode,
    stems: torch.Tensor,
    active: torch.Tensor,
    margin: int = 0,
    stem_latents: torch.Tensor | None = None,
    mixture_latents: torch.Tensor | None = None,
) -> list[SeparationScores]:
    """Oracle separation by latent subtraction, one `SeparationScores` per stem index.

    `stems` is `[songs, stems, samples]` (the mixture is their sum), `active` `[songs, stems]`
    marks the stems to score (those with energy). The estimate of stem s is
    Dec(Enc(mix) − Enc(mix − s)), scored by MSS and SI-SDR against s; its reconstruction
    Dec(Enc(s)) gives the denominator of the separation ratio.
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
    estimates = decode(mixture_latents[song_index] - residual_latents)
    reconstructions = decode(stem_latents[song_index, stem_index])
    estimate, reference = aligned(estimates, targets, margin)
    separated_mss = mss(estimate, reference).tolist()
    separated_si_sdr = si_sdr_db(estimate, reference).tolist()
    reconstruction_mss = _mss(reconstructions, targets, margin).tolist()
    for position, stem in enumerate(stem_index.tolist()):
        scores[stem].mss.append(separated_mss[position])
        scores[stem].si_sdr_db.append(separated_si_sdr[position])
        scores[stem].reconstruction_mss.append(reconstruction_mss[position])
    return scores


def separate_one(encode: Encode, decode: Decode, stems: torch.Tensor, stem: int) -> torch.Tensor:
    """Dec(Enc(mix) − Enc(mix − s)) `[samples]` for stems `[stems, samples]` of one song."""
    mixture = stems.sum(0, keepdim=True)
    latents = encode(torch.cat((mixture, mixture - stems[stem : stem + 1])))
    return decode((latents[0] - latents[1]).unsqueeze(0))[0]


def clip_pairs(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Disjoint random pairs of clip indices (a seeded shuffle, paired off): `count // 2` pairs."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [(order[i], order[i + 1]) for i in range(0, count - 1, 2)]


@dataclass
class EvalExamples:
    """Audio `[samples]` for listening and plotting: one reconstruction, one separation."""

    original: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    mixture: torch.Tensor | None = None
    stem: torch.Tensor | None = None
    separated: torch.Tensor | None = None
    stem_name: str = ""


def evaluate(
    encode: Encode,
    decode: Decode,
    clips: torch.Tensor,
    stems: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    stem_names: Sequence[str] = (),
    sample_rate: int = 44100,
    margin: int = 0,
    seed: int = 0,
    gains: Sequence[float] = HOMOGENEITY_GAINS,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], EvalExamples]:
    """Every metric of `lincae eval` as one flat dict, and examples to listen to.

    `clips` is `[clips, samples]` (may be empty), `stems` `[songs, stems, samples]` with
    `active` `[songs, stems]` and `stem_names`. The song mixtures (sums of stems) join the clips
    for reconstruction, homogeneity and pair additivity. Metrics without data are NaN; every key
    is always present (per-stem keys for the given `stem_names`). Key names: docs/metrics.md.
    """
    say = log or (lambda _message: None)
    if stems is None or active is None:
        stems = torch.zeros(0, len(stem_names), clips.shape[-1])
        active = torch.zeros(0, len(stem_names), dtype=torch.bool)
    songs = stems.shape[0]
    all_clips = torch.cat((clips, stems.sum(1))) if songs else clips
    metrics: dict[str, float] = {}
    examples = EvalExamples()

    say(f"reconstruction and homogeneity on {all_clips.shape[0]} clips")
    if all_clips.shape[0]:
        latents = encode(all_clips)
        decoded = decode(latents)
        recon = reconstruction(encode, decode, all_clips, margin, decoded)
        examples.original, examples.reconstruction = all_clips[0], decoded[0]
    else:
        latents = decoded = None
        recon = dict.fromkeys(("snr_db", "si_sdr_db", "mss"), math.nan)
    for key, value in recon.items():
        metrics[f"recon_{key}"] = value

    for gain in gains:
        label = gain_label(gain)
        if latents is not None:
            scores = homogeneity(encode, decode, all_clips, gain, margin, latents)
        else:
            scores = dict.fromkeys(("decoder_mss", "encoder_rel_l2", "ratio"), math.nan)
        metrics[f"dec_homogeneity_mss_{label}"] = scores["decoder_mss"]
        metrics[f"enc_homogeneity_rel_l2_{label}"] = scores["encoder_rel_l2"]
        metrics[f"homogeneity_ratio_{label}"] = scores["ratio"]

    pairs = clip_pairs(all_clips.shape[0], seed)
    say(f"additivity on {len(pairs)} pairs of clips")
    scores = dict.fromkeys(("decoder_mss", "encoder_rel_l2", "ratio"), math.nan)
    if pairs and latents is not None:
        first, second = (list(side) for side in zip(*pairs, strict=True))
        pair_audio = torch.stack((all_clips[first], all_clips[second]), dim=1)
        pair_latents = torch.stack((latents[first], latents[second]), dim=1)
        scores = additivity(encode, decode, pair_audio, margin, part_latents=pair_latents)
    metrics["dec_additivity_mss_pairs"] = scores["decoder_mss"]
    metrics["enc_additivity_rel_l2_pairs"] = scores["encoder_rel_l2"]
    metrics["additivity_ratio_pairs"] = scores["ratio"]

    scores = dict.fromkeys(("decoder_mss", "encoder_rel_l2", "ratio"), math.nan)
    per_stem = [SeparationScores() for _ in stem_names]
    if songs and latents is not None and decoded is not None:
        count, samples = stems.shape[1:]
        say(f"stem additivity and separation on {songs} song segments × {count} stems")
        stem_latents = encode(stems.reshape(songs * count, samples)).unflatten(0, (songs, count))
        mixture_latents, mixture_decoded = latents[-songs:], decoded[-songs:]
        scores = additivity(
            encode, decode, stems, margin, stem_latents, mixture_latents, mixture_decoded
        )
        per_stem = separation(encode, decode, stems, active, margin, stem_latents, mixture_latents)
        _separation_example(encode, decode, stems, active, stem_names, examples)
    metrics["dec_additivity_mss_stems"] = scores["decoder_mss"]
    metrics["enc_additivity_rel_l2_stems"] = scores["encoder_rel_l2"]
    metrics["additivity_ratio_stems"] = scores["ratio"]
    pooled = SeparationScores()
    for stem_scores in per_stem:
        pooled.mss += stem_scores.mss
        pooled.si_sdr_db += stem_scores.si_sdr_db
        pooled.reconstruction_mss += stem_scores.reconstruction_mss
    summaries = [("", pooled.summary())]
    summaries += [(f"_{name}", s.summary()) for name, s in zip(stem_names, per_stem, strict=True)]
    for suffix, summary in summaries:
        metrics[f"separation_mss{suffix}"] = summary["mss"]
        metrics[f"separation_si_sdr_db{suffix}"] = summary["si_sdr_db"]
        metrics[f"separation_ratio{suffix}"] = summary["ratio"]

    say("reference points")
    if all_clips.shape[0]:
        references = reference_points(all_clips, sample_rate, seed, margin)
    else:
        references = dict.fromkeys(REFERENCE_KEYS, math.nan)
    for key, value in references.items():
        metrics[f"ref_{key}"] = value
    return metrics, examples


def _separation_example(
    encode: Encode,
    decode: Decode,
    stems: torch.Tensor,
    active: torch.Tensor,
    stem_names: Sequence[str],
    examples: EvalExamples,
) -> None:
    """Fill the separation fields of `examples` from the first active stem (vocals if any)."""
    song_index, stem_index = torch.nonzero(active, as_tuple=True)
    if song_index.numel() == 0:
        return
    choice = 0
    if "vocals" in stem_names:
        # Vocals make the most recognisable separation to listen to.
        matches = (stem_index == list(stem_names).index("vocals")).nonzero()
        choice = int(matches[0]) if matches.numel() else 0
    song, stem = int(song_index[choice]), int(stem_index[choice])
    examples.mixture = stems[song].sum(0)
    examples.stem = stems[song, stem]
    examples.separated = separate_one(encode, decode, stems[song], stem)
    examples.stem_name = stem_names[stem]
