"""`lincae eval`: parse arguments, run lincae_cli.eval on each model, print a table or JSON."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lincae_cli.cli.options import DeviceOption, QuietOption

# Paragraphs are single strings: the help renderer keeps line breaks inside a paragraph.
EVAL_HELP = "\n\n".join(
    [
        "Measure how linear a model's latents are, and how well it reconstructs audio.",
        "DATA are audio files, folders of clips and/or folders of stems "
        "(song/{bass,drums,other,vocals}.*; MUSDB18's song/{mixture,drums,bass,other,vocals}.wav "
        "too). Several --model give one column each.",
        "Examples:",
        "  lincae eval ~/musdb18/test",
        "  lincae eval --model lincae-small --model m2l-small --json clips/ stems/ > eval.json",
        "  lincae eval --model runs/small/model.safetensors --plots eval-plots/ stems/",
        "Reported (definitions in docs/metrics.md): reconstruction SNR, SI-SDR and MSS "
        "(multi-scale spectral distance, 0 = identical); decoder homogeneity and additivity "
        "(MSS of Dec(a·Enc(x)) vs a·x, of Dec(Σ Enc(stem)) vs the mixture); encoder homogeneity "
        "and additivity errors (relative L2 of latents); oracle separation "
        "Dec(Enc(mix) − Enc(mix − stem)) vs stem; matched ratios (1.0 for a perfectly linear "
        "model, whatever its reconstruction quality); and the MSS of white noise at 10 and "
        "20 dB SNR and of an 11 kHz low-pass, for reference. Decoding uses a fixed --seed.",
    ]
)

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


def eval_command(
    data: Annotated[
        list[Path],
        typer.Argument(
            metavar="DATA...",
            help="Audio files, folders of clips, folders of stems (searched recursively).",
            show_default=False,
        ),
    ],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help="Model: a name from `lincae models`, hf://..., or a .safetensors path. Repeat "
            "to compare models side by side. Default: lincae-small.",
            show_default=False,
        ),
    ] = None,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds", metavar="SECONDS", help="Segment length, rounded to whole latent frames."
        ),
    ] = 4.0,
    max_clips: Annotated[
        int,
        typer.Option(
            "--max-clips",
            min=1,
            metavar="N",
            help="At most this many clip segments, and this many song segments. Cost: about "
            "17 decodes per song segment, 8 per clip.",
        ),
    ] = 20,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, metavar="N", help="Segments per encode/decode call."),
    ] = 8,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", metavar="N", help="Decoder noise seed (also for pairs and noise refs)."
        ),
    ] = 0,
    steps: Annotated[
        int, typer.Option("--steps", min=1, metavar="N", help="Consistency decoding steps.")
    ] = 1,
    device: DeviceOption = "auto",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            metavar="PRECISION",
            help="fp32 (the default: reduced precision adds a non-linearity of its own to the "
            "figures), auto, bf16 or fp16. auto uses bf16 where the hardware runs it natively.",
        ),
    ] = "fp32",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON on stdout instead of the table.")
    ] = False,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="FOLDER",
            help="Write spectrogram PNGs and WAV examples of each model into this folder "
            r"(needs matplotlib: pip install 'lincae\[plots]').",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    from lincae_cli.engine.inference import load_inference_model
    from lincae_cli.eval.codec import model_codec
    from lincae_cli.eval.datasets import clip_layout, discover, load_eval_set
    from lincae_cli.eval.linearity import HOMOGENEITY_GAINS, clip_pairs, evaluate
    from lincae_cli.eval.plots import require_matplotlib, write_examples
    from lincae_cli.hub.registry import DEFAULT_MODEL
    from lincae_cli.hub.store import model_identity

    def log(message: str) -> None:
        if not quiet:
            typer.echo(message, err=True)

    if plots is not None:
        require_matplotlib()
    specs = list(models or [DEFAULT_MODEL])
    sources = discover(data)
    log(f"found {len(sources.clip_files)} clip files and {len(sources.songs)} song folders")

    eval_sets: dict[Any, Any] = {}
    results: list[dict[str, Any]] = []
    for spec in specs:
        started = time.monotonic()
        model = load_inference_model(spec, device, precision)
        model_name, weights_sha256 = model_identity(model)
        layout = clip_layout(seconds, model.config)
        if layout not in eval_sets:
            eval_sets[layout] = load_eval_set(sources, layout, max_clips)
        eval_set = eval_sets[layout]
        clip_count = eval_set.clips.shape[0] + eval_set.stems.shape[0]
        log(
            f"{spec}: {eval_set.clips.shape[0]} clips, {eval_set.stems.shape[0]} song segments "
            f"of {layout.samples / layout.sample_rate:.2f} s ({layout.latent_frames} latent frames)"
        )
        encode, decode = model_codec(model, seed, batch_size, steps)
        metrics, examples = evaluate(
            encode,
            decode,
            eval_set.clips,
            eval_set.stems,
            eval_set.active,
            eval_set.stem_names,
            sample_rate=layout.sample_rate,
            margin=layout.margin,
            seed=seed,
            log=lambda message, spec=spec: log(f"{spec}: {message}"),
        )
        if plots is not None:
            label = _column_name(spec, [r["name"] for r in results])
            written = write_examples(plots, label, examples, layout.sample_rate)
            log(f"{spec}: wrote {len(written)} files to {plots}")
        elapsed = time.monotonic() - started
        log(f"{spec}: done in {elapsed:.1f} s")
        results.append(
            {
                "name": _column_name(spec, [r["name"] for r in results]),
                "spec": spec,
                "model_name": model_name,
                "weights_sha256": weights_sha256,
                "device": str(model.device),
                "sample_rate": layout.sample_rate,
                "elapsed_seconds": round(elapsed, 2),
                "counts": {
                    "clips": clip_count,
                    "pairs": len(clip_pairs(clip_count, seed)),
                    "song_segments": int(eval_set.stems.shape[0]),
                    "active_stems": {
                        name: int(eval_set.active[:, k].sum())
                        for k, name in enumerate(eval_set.stem_names)
                    },
                },
                "metrics": metrics,
                "stem_names": eval_set.stem_names,
                "segment_seconds": layout.samples / layout.sample_rate,
                "latent_frames": layout.latent_frames,
                "margin_samples": layout.margin,
            }
        )

    if json_output:
        report = {
            "settings": {
                "inputs": [str(p) for p in data],
                "seconds_requested": seconds,
                "max_clips": max_clips,
                "batch_size": batch_size,
                "seed": seed,
                "steps": steps,
                "precision": precision,
                "homogeneity_gains": list(HOMOGENEITY_GAINS),
            },
            "models": [
                {key: value for key, value in r.items() if key != "stem_names"} for r in results
            ],
        }
        sys.stdout.write(json.dumps(_finite(report), indent=2) + "\n")
    else:
        _print_table(results, HOMOGENEITY_GAINS)


def _column_name(spec: str, taken: list[str]) -> str:
    """`spec`, or `spec #2`, `spec #3`, ... when the same model is given again."""
    name, copy = spec, 1
    while name in taken:
        copy += 1
        name = f"{spec} #{copy}"
    return name


def _finite(value: Any) -> Any:
    """NaN and infinities -> None, recursively, so that the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _format(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f}" if key.endswith("_db") or "_db_" in key else f"{value:.3f}"


def _expand_rows(stem_names: list[str], gains: tuple[float, ...]) -> list[tuple[str | None, str]]:
    from lincae_cli.eval.linearity import gain_label

    rows: list[tuple[str | None, str]] = []
    for key, label in _TABLE_ROWS:
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


def _print_table(results: list[dict[str, Any]], gains: tuple[float, ...]) -> None:
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
    for key, label in _expand_rows(stem_names, gains):
        if key is None:
            table.add_row(f"[bold]{label}[/bold]", *[""] * len(results))
            continue
        values = [_format(key, result["metrics"].get(key)) for result in results]
        table.add_row(f"  {escape(label)}", *values)
    Console().print(table)
