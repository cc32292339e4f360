"""`lincae eval`: parse arguments, run lincae_cli.eval on each model, print a table or JSON."""

from __future__ import annotations

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
        "Every gain, sum and difference of latents is also scored with the affine correction "
        "that --affine applies (the model's silence latent b: a·z + (1 − a)·b, Σ zᵢ − (n − 1)·b, "
        "z₁ − z₂ + b; docs/latent-algebra.md), shown as plain → affine, and the default the "
        "measurement favours is printed next to the model's own.",
        "Level errors in dB (0 = right; docs/metrics.md, Level): of the reconstruction (RMS "
        "and BS.1770 loudness), of gain tracking (Dec(a·Enc(x)) against Dec(Enc(x)) + "
        "20·log10 a) and of sums, as decoded → with the recorded loudness restored "
        "(decode --restore-loudness), and the default the measurement favours.",
    ]
)


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
            "to compare models side by side. Default: $LINCAE_MODEL, else lincae-small.",
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
            "26 decodes per song segment, 12 per clip.",
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
    import torch

    from lincae_cli.engine.inference import load_inference_model
    from lincae_cli.eval.affine import affine_recommended
    from lincae_cli.eval.codec import model_codec
    from lincae_cli.eval.datasets import clip_layout, discover, load_eval_set
    from lincae_cli.eval.level import restore_helps
    from lincae_cli.eval.linearity import HOMOGENEITY_GAINS, clip_pairs, evaluate
    from lincae_cli.eval.plots import require_matplotlib, write_examples
    from lincae_cli.hub.registry import default_model
    from lincae_cli.hub.silence import silence_latent_of
    from lincae_cli.hub.store import model_identity

    def log(message: str) -> None:
        if not quiet:
            typer.echo(message, err=True)

    if plots is not None:
        require_matplotlib()
    specs = list(models or [default_model()[0]])
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
            separation_examples=plots is not None,
            silence=torch.tensor(silence_latent_of(model, weights_sha256)),
        )
        if plots is not None:
            label = _column_name(spec, [r["name"] for r in results])
            written = write_examples(
                plots,
                label,
                examples,
                layout.sample_rate,
                clip_names=eval_set.clip_names,
                song_names=eval_set.segment_names,
            )
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
                "affine_default": model.affine_default,
                "affine_recommended": affine_recommended(metrics),
                "restore_loudness_default": model.restore_loudness,
                "restore_loudness_recommended": restore_helps(metrics),
                "stem_names": eval_set.stem_names,
                "segment_seconds": layout.samples / layout.sample_rate,
                "latent_frames": layout.latent_frames,
                "margin_samples": layout.margin,
            }
        )

    if json_output:
        from lincae_cli.cli.render import command_document, emit_json

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
        emit_json(command_document("eval", **report))  # NaN and infinities become null
    else:
        from lincae_cli.cli.eval_table import print_table

        print_table(results, HOMOGENEITY_GAINS)


def _column_name(spec: str, taken: list[str]) -> str:
    """`spec`, or `spec #2`, `spec #3`, ... when the same model is given again."""
    name, copy = spec, 1
    while name in taken:
        copy += 1
        name = f"{spec} #{copy}"
    return name
