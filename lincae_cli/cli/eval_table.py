"""The table `lincae eval` prints: which metrics in which order, how values are shown, and the
note that explains a "—"."""

from __future__ import annotations

import math
from typing import Any

# (key or None for a section title, label shown in the table)
_TABLE_ROWS: list[tuple[str | None, str]] = [
    (None, "reconstruction"),
    ("recon_snr_db", "SNR dB ↑"),
    ("recon_si_sdr_db", "SI-SDR dB ↑"),
    ("recon_mss", "MSS ↓"),
    (None, "decoder homogeneity: MSS"),
    ("dec_homogeneity_mss_{gain}", "a = {gain_value} ↓"),
    (None, "encoder homogeneity: relative L2"),
    ("enc_homogeneity_rel_l2_{gain}", "a = {gain_value} ↓"),
    (None, "homogeneity ratio (1 = linear)"),
    ("homogeneity_ratio_{gain}", "a = {gain_value}"),
    (None, "additivity (pairs of clips, stems)"),
    ("dec_additivity_mss_pairs", "decoder MSS, pairs ↓"),
    ("enc_additivity_rel_l2_pairs", "encoder rel. L2, pairs ↓"),
    ("additivity_ratio_pairs", "ratio, pairs (1 = linear)"),
    ("dec_additivity_mss_stems", "decoder MSS, stems ↓"),
    ("enc_additivity_rel_l2_stems", "encoder rel. L2, stems ↓"),
    ("additivity_ratio_stems", "ratio, stems (1 = linear)"),
    (None, "separation by latent subtraction"),
    ("separation_mss{stem}", "MSS ↓{stem_label}"),
    ("separation_si_sdr_db{stem}", "SI-SDR dB ↑{stem_label}"),
    ("separation_ratio{stem}", "ratio (1 = linear){stem_label}"),
    (None, "reference points: MSS to x of"),
    ("ref_noise_10db_mss", "white noise at 10 dB SNR"),
    ("ref_noise_20db_mss", "white noise at 20 dB SNR"),
    ("ref_lowpass_11khz_mss", "11 kHz low-pass"),
]

# The rows shown plain → affine (the affine value under the key with AFFINE_PREFIX).
_AFFINE_ROWS: list[tuple[str | None, str]] = [
    (None, "affine correction with b = Enc(silence): plain → affine"),
    ("homogeneity_ratio_{gain}", "homogeneity ratio, a = {gain_value}"),
    ("additivity_ratio_pairs", "additivity ratio, pairs"),
    ("additivity_ratio_stems", "additivity ratio, stems"),
    ("enc_additivity_rel_l2_stems", "encoder additivity rel. L2, stems ↓"),
    ("separation_ratio{stem}", "separation ratio{stem_label}"),
    ("separation_si_sdr_db", "separation SI-SDR dB ↑, all stems"),
]


# The rows shown as decoded → loudness restored (the restored value under RESTORED_PREFIX).
_LEVEL_ROWS: list[tuple[str | None, str]] = [
    (None, "level error dB (0 = right): as decoded → loudness restored"),
    ("level_recon_rms_db", "reconstruction, RMS, mean"),
    ("level_recon_rms_db_worst", "reconstruction, RMS, worst"),
    ("level_recon_loudness_db", "reconstruction, LUFS, mean"),
    ("level_recon_loudness_db_worst", "reconstruction, LUFS, worst"),
    ("level_gain_db_{gain}", "gain tracking, a = {gain_value}"),
    ("level_mix_db_pairs", "sum of latents, pairs (est.)"),
    ("level_mix_db_stems", "sum of latents, stems (est.)"),
    ("recon_mss", "reconstruction MSS ↓"),
    ("recon_snr_db", "reconstruction SNR dB ↑"),
]


def format_value(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f}" if key.endswith("_db") or "_db_" in key else f"{value:.3f}"


def expand_rows(
    stem_names: list[str],
    gains: tuple[float, ...],
    table_rows: list[tuple[str | None, str]] = _TABLE_ROWS,
) -> list[tuple[str | None, str]]:
    from lincae_cli.eval.linearity import gain_label

    rows: list[tuple[str | None, str]] = []
    for key, label in table_rows:
        if key is None or ("{gain}" not in key and "{stem}" not in key):
            rows.append((key, label))
        elif "{gain}" in key:
            for gain in gains:
                rows.append(
                    (key.format(gain=gain_label(gain)), label.format(gain_value=f"{gain:g}"))
                )
        else:
            rows.append((key.format(stem=""), label.format(stem_label=", all stems")))
            for stem in stem_names:
                rows.append((key.format(stem=f"_{stem}"), label.format(stem_label=f", {stem}")))
    return rows


def print_table(results: list[dict[str, Any]], gains: tuple[float, ...]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    stem_names: list[str] = []
    for result in results:
        stem_names += [name for name in result["stem_names"] if name not in stem_names]
    table = Table(title="lincae eval", show_lines=False)
    table.add_column("metric")
    for result in results:
        table.add_column(escape(result["name"]), justify="right")
    counts = results[0]["counts"]
    caption = (
        f"{counts['clips']} clips, {counts['pairs']} pairs, {counts['song_segments']} song "
        f"segments of {results[0]['segment_seconds']:.2f} s"
    )
    table.caption = caption + "; MSS: 0 = identical; ratios: 1 = perfectly linear"
    for key, label in expand_rows(stem_names, gains):
        if key is None:
            table.add_row(f"[bold]{label}[/bold]", *[""] * len(results))
            continue
        values = [format_value(key, result["metrics"].get(key)) for result in results]
        table.add_row(f"  {escape(label)}", *values)
    _add_affine_rows(table, results, expand_rows(stem_names, gains, _AFFINE_ROWS))
    _add_level_rows(table, results)
    console = Console()
    console.print(table)
    note = _dash_note(results)
    if note is not None:
        console.print(note, markup=False, highlight=False)


def _add_affine_rows(
    table: Any, results: list[dict[str, Any]], rows: list[tuple[str | None, str]]
) -> None:
    """The `_AFFINE_ROWS` as "plain → affine" cells, then each model's affine default."""
    from rich.markup import escape

    from lincae_cli.eval.affine import AFFINE_PREFIX

    for key, label in rows:
        if key is None:
            table.add_row(f"[bold]{escape(label)}[/bold]", *[""] * len(results))
            continue
        cells = []
        for result in results:
            metrics = result["metrics"]
            plain, affine = metrics.get(key), metrics.get(AFFINE_PREFIX + key)
            cells.append(f"{format_value(key, plain)} → {format_value(key, affine)}")
        table.add_row(f"  {escape(label)}", *cells)
    words = {True: "on", False: "off", None: "—"}
    defaults = [
        f"{words[r.get('affine_default')]} / {words[r.get('affine_recommended')]}" for r in results
    ]
    table.add_row("  default --affine: model's / measured", *defaults)


def _add_level_rows(table: Any, results: list[dict[str, Any]]) -> None:
    """The `_LEVEL_ROWS` as "decoded → restored" cells, then each model's default."""
    from rich.markup import escape

    from lincae_cli.eval.level import LEVEL_GAINS, RESTORED_PREFIX

    for key, label in expand_rows([], LEVEL_GAINS, _LEVEL_ROWS):
        if key is None:
            table.add_row(f"[bold]{escape(label)}[/bold]", *[""] * len(results))
            continue
        cells = [
            f"{format_value(key, r['metrics'].get(key))} → "
            f"{format_value(key, r['metrics'].get(RESTORED_PREFIX + key))}"
            for r in results
        ]
        table.add_row(f"  {escape(label)}", *cells)
    words = {True: "on", False: "off", None: "—"}
    defaults = [
        f"{words[r.get('restore_loudness_default')]} / "
        f"{words[r.get('restore_loudness_recommended')]}"
        for r in results
    ]
    table.add_row("  default --restore-loudness: model's / measured", *defaults)


def _dash_note(results: list[dict[str, Any]]) -> str | None:
    """The line under the table that says why rows show "—", when some do."""
    if all(format_value(key, value) != "—" for r in results for key, value in r["metrics"].items()):
        return None
    reasons: list[str] = []
    for result in results:
        counts = result["counts"]
        if counts["pairs"] == 0:
            reasons.append(
                f"pairs need 2 or more clips (song mixtures count too; found {counts['clips']})"
            )
        if counts["song_segments"] == 0:
            reasons.append(
                "stems and separation need song folders of stems "
                "(song/{bass,drums,other,vocals}.*); none found"
            )
        reasons += [
            f"{stem} is silent in every song segment"
            for stem, active in counts["active_stems"].items()
            if active == 0 and counts["song_segments"]
        ]
    unique = list(dict.fromkeys(reasons)) or ["a measurement gave no finite value"]
    return "— = no data: " + "; ".join(unique) + "."
