"""The linearity evaluation behind `lincae eval`, as pure functions of an encoder and a decoder.

Every function takes an `encode` callable (audio `[batch, samples]` -> latents
`[batch, channels, frames]`) and a `decode` callable (latents -> audio `[batch, samples']`) plus
audio tensors, and returns numbers (means over examples). Nothing here reads files or knows about
the network, so the maths can be checked with toy models (an identity, a squaring encoder).
codec.py turns a ConsistencyAutoencoder into such a pair of callables; the trainer's validation
runs `reconstruction`, `homogeneity` and `additivity` from here too. Oracle separation by latent
subtraction is in separation.py; `evaluate` runs everything.

Decoded audio is compared with its reference by `metrics.aligned`, less `margin` samples at each
end. The definitions of every metric and ratio are in docs/metrics.md. Given the model's silence
latent `silence` (b, `[channels]`), each latent operation is also scored with the affine
correction of affine.py, under the same keys prefixed `affine_` (docs/latent-algebra.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lincae_cli.eval.affine import AFFINE_PREFIX, affine_term
from lincae_cli.eval.codec import Decode, Encode
from lincae_cli.eval.level import LEVEL_GAINS, KeptDecodes, level_metrics
from lincae_cli.eval.metrics import (
    aligned,
    aligned_mss,
    example_mean,
    matched_ratio,
    mss,
    relative_l2,
    si_sdr_db,
    snr_db,
)
from lincae_cli.eval.references import REFERENCE_KEYS, reference_points
from lincae_cli.eval.separation import (
    SeparationExample,
    SeparationScores,
    example_separations,
    separation,
)

HOMOGENEITY_GAINS = (0.25, 0.5, 2.0)


def gain_label(gain: float) -> str:
    """`0.25` -> `"a0.25"`, `2.0` -> `"a2"`: the suffix of per-gain metric keys."""
    return f"a{gain:g}"


def _operation_scores(
    decode: Decode,
    operated: torch.Tensor,
    target_latents: torch.Tensor,
    target: torch.Tensor,
    matched: float,
    margin: int,
    norm_of_target: bool,
) -> dict[str, float]:
    """`decoder_mss`, `encoder_rel_l2` and `ratio` of latents `operated` (a latent operation's
    result) against the encoding `target_latents` of the audio `target` it stands for; the
    latent error is relative to the norm of `target_latents` or (`norm_of_target=False`) of
    `operated`, as docs/metrics.md defines each."""
    decoder_mss = example_mean(aligned_mss(decode(operated), target, margin))
    if norm_of_target:
        encoder_error = relative_l2(operated, target_latents)
    else:
        encoder_error = relative_l2(target_latents, operated)
    return {
        "decoder_mss": decoder_mss,
        "encoder_rel_l2": example_mean(encoder_error),
        "ratio": matched_ratio(decoder_mss, matched),
    }


def _both_ways(
    decode: Decode,
    operated: torch.Tensor,
    weight_sum: float,
    silence: torch.Tensor | None,
    target_latents: torch.Tensor,
    target: torch.Tensor,
    matched: float,
    margin: int,
    norm_of_target: bool,
) -> dict[str, float]:
    """`_operation_scores` of `operated` (weights summing to `weight_sum`), and with `silence`
    those of its affine correction under `affine_` keys."""
    common = (target_latents, target, matched, margin, norm_of_target)
    scores = _operation_scores(decode, operated, *common)
    if silence is not None:
        affine = _operation_scores(decode, operated + affine_term(weight_sum, silence), *common)
        scores |= {AFFINE_PREFIX + key: value for key, value in affine.items()}
    return scores


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
    silence: torch.Tensor | None = None,
) -> dict[str, float]:
    """How well scaling audio by `gain` and scaling its latents agree, for clips `[batch, samples]`.

    Keys: `decoder_mss` = MSS(Dec(a·Enc(x)), a·x); `encoder_rel_l2` =
    ‖Enc(a·x) − a·Enc(x)‖ / ‖a·Enc(x)‖; `ratio` = decoder_mss / MSS(Dec(Enc(a·x)), a·x).
    With `silence` (b) also `affine_*`: the same with a·Enc(x) + (1 − a)·b.
    """
    if latents is None:
        latents = encode(clips)
    scaled_audio = gain * clips
    latents_of_scaled = encode(scaled_audio)
    matched = example_mean(aligned_mss(decode(latents_of_scaled), scaled_audio, margin))
    return _both_ways(
        decode,
        gain * latents,
        gain,
        silence,
        latents_of_scaled,
        scaled_audio,
        matched,
        margin,
        False,
    )


def additivity(
    encode: Encode,
    decode: Decode,
    parts: torch.Tensor,
    margin: int = 0,
    part_latents: torch.Tensor | None = None,
    sum_latents: torch.Tensor | None = None,
    sum_decoded: torch.Tensor | None = None,
    silence: torch.Tensor | None = None,
) -> dict[str, float]:
    """How well adding audio and adding latents agree, for parts `[batch, parts, samples]`.

    With u = Σ parts (summed over the parts axis): keys `decoder_mss` = MSS(Dec(Σ Enc(part)), u);
    `encoder_rel_l2` = ‖Enc(u) − Σ Enc(part)‖ / ‖Enc(u)‖; `ratio` = decoder_mss /
    MSS(Dec(Enc(u)), u). `part_latents` `[batch, parts, C, L]`, `sum_latents` (Enc(u)) and
    `sum_decoded` (Dec(Enc(u))) may be passed to save work. With `silence` (b) also
    `affine_*`: the same with Σ Enc(part) − (parts − 1)·b.
    """
    batch, count, samples = parts.shape
    total = parts.sum(1)
    if part_latents is None:
        part_latents = encode(parts.reshape(batch * count, samples)).unflatten(0, (batch, count))
    if sum_latents is None:
        sum_latents = encode(total)
    if sum_decoded is None:
        sum_decoded = decode(sum_latents)
    matched = example_mean(aligned_mss(sum_decoded, total, margin))
    summed = part_latents.sum(1)
    return _both_ways(decode, summed, count, silence, sum_latents, total, matched, margin, True)


def clip_pairs(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Disjoint random pairs of clip indices (a seeded shuffle, paired off): `count // 2` pairs."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [(order[i], order[i + 1]) for i in range(0, count - 1, 2)]


@dataclass
class EvalExamples:
    """Audio `[samples]` for listening and plotting: the reconstruction of segment `clip` (an
    index into the clips followed by the song mixtures) and a separation of each stem."""

    original: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    clip: int = 0
    separations: list[SeparationExample] = field(default_factory=list)


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
    separation_examples: bool = True,
    silence: torch.Tensor | None = None,
) -> tuple[dict[str, float], EvalExamples]:
    """Every metric of `lincae eval` as one flat dict, and examples to listen to.

    `clips` is `[clips, samples]` (may be empty), `stems` `[songs, stems, samples]` with
    `active` `[songs, stems]` and `stem_names`. The song mixtures (sums of stems) join the clips
    for reconstruction, homogeneity and pair additivity. Metrics without data are NaN; every key
    is always present (per-stem keys for the given `stem_names`). Key names: docs/metrics.md.
    `separation_examples=False` skips the examples' separations (2 encodes, 1 decode a stem).
    `silence` (the model's b, `[channels]`) adds the affine scores (`affine_` keys, NaN without).
    The level metrics of level.py (`level_`, `restored_` keys) share the same decodes.
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
        examples.original, examples.reconstruction, examples.clip = all_clips[0], decoded[0], 0
    else:
        latents = decoded = None
        recon = dict.fromkeys(("snr_db", "si_sdr_db", "mss"), math.nan)
    for key, value in recon.items():
        metrics[f"recon_{key}"] = value

    # The level metrics (level.py) reuse the decodes of the linearity metrics: same latents.
    decode = kept = KeptDecodes(decode)
    scaled_decoded = {}
    mixes: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {"pairs": None, "stems": None}
    if latents is not None:
        scaled_decoded = {gain: kept.keep(gain * latents) for gain in LEVEL_GAINS}

    for gain in gains:
        scores: dict[str, float] = {}
        if latents is not None:
            scores = homogeneity(encode, decode, all_clips, gain, margin, latents, silence)
        _record(metrics, "homogeneity", gain_label(gain), scores)

    pairs = clip_pairs(all_clips.shape[0], seed)
    say(f"additivity on {len(pairs)} pairs of clips")
    scores = {}
    if pairs and latents is not None:
        first, second = (list(side) for side in zip(*pairs, strict=True))
        pair_audio = torch.stack((all_clips[first], all_clips[second]), dim=1)
        pair_latents = torch.stack((latents[first], latents[second]), dim=1)
        mixes["pairs"] = (pair_audio, kept.keep(pair_latents.sum(1)))
        scores = additivity(
            encode, decode, pair_audio, margin, part_latents=pair_latents, silence=silence
        )
    _record(metrics, "additivity", "pairs", scores)

    scores = {}
    per_stem = [SeparationScores() for _ in stem_names]
    if songs and latents is not None and decoded is not None:
        count, samples = stems.shape[1:]
        say(f"stem additivity and separation on {songs} song segments × {count} stems")
        stem_latents = encode(stems.reshape(songs * count, samples)).unflatten(0, (songs, count))
        known = (stem_latents, latents[-songs:])  # the latents of the stems, of the mixtures
        mixes["stems"] = (stems, kept.keep(stem_latents.sum(1)))
        scores = additivity(encode, decode, stems, margin, *known, decoded[-songs:], silence)
        per_stem = separation(encode, decode, stems, active, margin, *known, silence)
        if separation_examples:
            examples.separations = example_separations(encode, decode, stems, active, stem_names)
    _record(metrics, "additivity", "stems", scores)
    pooled = SeparationScores()
    for stem_scores in per_stem:
        pooled.extend(stem_scores)
    summaries = [("", pooled.summary())]
    summaries += [(f"_{name}", s.summary()) for name, s in zip(stem_names, per_stem, strict=True)]
    for suffix, summary in summaries:
        for prefix in ("", AFFINE_PREFIX):
            for name in ("mss", "si_sdr_db", "ratio"):
                metrics[f"{prefix}separation_{name}{suffix}"] = summary[prefix + name]

    say("level")
    metrics |= level_metrics(all_clips, decoded, scaled_decoded, mixes, sample_rate, margin)

    say("reference points")
    if all_clips.shape[0]:
        references = reference_points(all_clips, sample_rate, seed, margin)
    else:
        references = dict.fromkeys(REFERENCE_KEYS, math.nan)
    for key, value in references.items():
        metrics[f"ref_{key}"] = value
    return metrics, examples


def _record(metrics: dict[str, float], kind: str, suffix: str, scores: dict[str, float]) -> None:
    """`dec_<kind>_mss_<suffix>`, `enc_<kind>_rel_l2_<suffix>` and `<kind>_ratio_<suffix>`, and
    their `affine_` forms, from `scores` (`homogeneity` or `additivity`; NaN where missing)."""
    keys = {
        "decoder_mss": f"dec_{kind}_mss_{suffix}",
        "encoder_rel_l2": f"enc_{kind}_rel_l2_{suffix}",
        "ratio": f"{kind}_ratio_{suffix}",
    }
    for prefix in ("", AFFINE_PREFIX):
        for name, key in keys.items():
            metrics[prefix + key] = scores.get(prefix + name, math.nan)
