"""`lincae info`: what a `.lat` file holds, as a table or JSON."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.batch.inputs import InputFile, expand_inputs
from lincae_cli.cli.options import JsonOption
from lincae_cli.cli.render import Reporter
from lincae_cli.errors import LincaeError
from lincae_cli.paths import LAT_SUFFIX, NPY_SUFFIX, STDIN_NAME, is_npy_path

if TYPE_CHECKING:
    from lincae_cli.latents.latfile import LatentFile

INFO_HELP = """Show what latent files hold: model, sample rate, channels, duration, latent \
frames and rate, storage dtype, loudness and provenance (the operations that made them).

A .npy file is read with its .json sidecar (written by `lincae encode -o NAME.npy`).

Examples:

  lincae info song.lat

  lincae info song.npy

  lincae info latents/ --json

  lincae encode song.wav -o - | lincae info -
"""


def info(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUTS...",
            help=".lat or .npy files, folders, glob patterns, or - for stdin.",
            show_default=False,
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    # Unreadable inputs are failed entries (an error line each, exit code 1), listed in --json.
    reporter = Reporter("info", quiet=True, json_output=json_output, stdout_busy=False)
    result = reporter.result
    files, failures = expand_inputs(inputs, {LAT_SUFFIX, NPY_SUFFIX}, ".lat or .npy")
    result.fail_all(failures)
    for item in files:
        try:
            result.ok(item.name, None, **describe(item))
        except LincaeError as error:
            result.failed(item.name, str(error))
    if not json_output:
        _print_tables([record for record in result.records if record["status"] == "ok"])
    raise typer.Exit(reporter.finish())


def describe(item: InputFile) -> dict[str, Any]:
    """What one .lat file holds: the entry fields of its ``--json`` record (docs/cli.md), its
    metadata document, and what the tensor says."""
    from lincae_cli.latents.latfile import lat_from_bytes

    if item.path is not None and is_npy_path(item.path):
        from lincae_cli.latents.npy import npy_dtype, read_npy

        lat, dtype = read_npy(item.path), npy_dtype(item.path)
    else:
        data = _read_bytes(item)
        lat, dtype = lat_from_bytes(data, item.name), _stored_dtype(data, item.name)
    return {
        "duration_seconds": lat.meta.duration_seconds,
        "sample_rate": lat.meta.source_sample_rate,
        "frames": lat.frames,
        "loudness_lufs": lat.meta.source_loudness_lufs,
        "dtype": dtype,
        "latent_channels": lat.latent_channels,
        **lat.meta.to_json_dict(),
        "operations": operations(lat),
    }


def _read_bytes(item: InputFile) -> bytes:
    if item.is_stdin:
        data = sys.stdin.buffer.read()
        if not data:
            raise LincaeError(f"{STDIN_NAME}: not a .lat file (empty)")
        return data
    from lincae_cli.latents.latfile import read_lat_bytes

    assert item.path is not None
    return read_lat_bytes(item.path)


def _stored_dtype(data: bytes, name: str) -> str:
    """The dtype the latents are stored in (the header was validated by `lat_from_bytes`)."""
    from lincae_cli.latents.container import STORED_DTYPES, split_container
    from lincae_cli.latents.latfile import TENSOR_NAME

    header, _ = split_container(data, name)
    return STORED_DTYPES[header[TENSOR_NAME]["dtype"]].name


def operations(lat: LatentFile) -> str:
    """The provenance as one line: ``encode(song.wav) -> gain(-6.00 dB)``."""
    return " -> ".join(_describe_entry(entry) for entry in lat.meta.provenance) or "-"


def _describe_entry(entry: dict[str, Any]) -> str:
    op = str(entry.get("op", "?"))
    if op == "encode":
        return f"encode({Path(str(entry.get('input', '?'))).name})"
    if op == "gain" and isinstance(entry.get("envelope"), list):
        points = [p for p in entry["envelope"] if isinstance(p, list) and len(p) == 2]
        return "gain(envelope " + ",".join(f"{t:g}:{g:+.1f}dB" for t, g in points) + ")"
    if op in ("trim", "pad"):
        return f"{op}({_samples_words(entry)})"
    if op == "fade":
        seconds = f"in {entry.get('in_seconds', '?')} s, out {entry.get('out_seconds', '?')} s"
        return f"fade({seconds}, {entry.get('shape', '?')})"
    if op == "concat":
        names = [_input_name(i) for i in entry.get("inputs") or [] if isinstance(i, dict)]
        crossfade = entry.get("crossfade_seconds")
        return f"concat({', '.join(names)}" + (f"; crossfade {crossfade} s)" if crossfade else ")")
    if op == "gain":
        shown = ", ".join(_gain_words(entry.get("gain_linear"), shown_at_unity=True)) or "?"
        if "target_lufs" in entry:
            shown += f" to {entry['target_lufs']} LUFS"
        return f"gain({shown})"
    if op in ("mix", "subtract"):
        inputs = [i for i in entry.get("inputs") or [] if isinstance(i, dict)]
        names = [_input_name(i) for i in inputs]
        if op == "mix":  # subtract's gains (1, -1, -1, ...) are what the name says
            names = [
                " ".join([name, *_gain_words(i.get("gain_linear"), shown_at_unity=False)])
                + (f" at {i['position_samples']} samples" if i.get("position_samples") else "")
                for name, i in zip(names, inputs, strict=True)
            ]
        return f"{op}({', '.join(names)})"
    if op == "upmix":
        return f"upmix({_channels_words(entry)})"
    return op


def _samples_words(entry: dict[str, Any]) -> str:
    """``start 44100, end 88200 samples`` of a trim or pad entry."""
    return f"start {entry.get('start_samples', '?')}, end {entry.get('end_samples', '?')} samples"


def _input_name(recorded: dict[str, Any]) -> str:
    """An input of a mix by its file name; ``upmix(acc.lat, 1→2)`` when it was upmixed."""
    name = Path(str(recorded.get("name", "?"))).name
    chain = recorded.get("provenance")
    last = chain[-1] if isinstance(chain, list) and chain else None
    if isinstance(last, dict) and last.get("op") == "upmix":
        return f"upmix({name}, {_channels_words(last)})"
    return name


def _channels_words(upmix: dict[str, Any]) -> str:
    return f"{upmix.get('channels_from', '?')}→{upmix.get('channels_to', '?')}"


def _gain_words(gain_linear: object, shown_at_unity: bool) -> list[str]:
    """A recorded linear gain in words: ``["-6.00 dB", "polarity flip"]``; ``[]`` when unknown
    (or unity, unless ``shown_at_unity``)."""
    if not isinstance(gain_linear, int | float):
        return []
    words = []
    if gain_linear == 0:
        words.append("-inf dB")
    elif abs(gain_linear) != 1 or (shown_at_unity and gain_linear == 1):
        words.append(f"{20 * math.log10(abs(gain_linear)):+.2f} dB")
    if gain_linear < 0:
        words.append("polarity flip")
    return words


def _print_tables(documents: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    for document in documents:
        table = Table(title=document["input"], show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in _rows(document):
            table.add_row(key, value)
        console.print(table)


def _decoded_level(d: dict[str, Any]) -> str:
    """Whether decoding restores the recorded loudness (the model's default; the decode flag
    `--restore-loudness/--no-restore-loudness` overrides it)."""
    from lincae_cli.hub.registry import registered_restore_loudness

    if d["source_loudness_lufs"] is None:
        return "as the model decodes it (no loudness recorded to restore)"
    restore = registered_restore_loudness(d["model_name"], d["model_sha256"])
    if restore is None:
        return (
            "restored to the loudness above if the model file says so (restore_loudness), "
            "else as the model decodes it"
        )
    if restore:
        return f"restored to the loudness above ({d['model_name']}'s default)"
    return f"as the model decodes it ({d['model_name']}'s default; --restore-loudness restores)"


def _rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    loudness = d["source_loudness_lufs"]
    if loudness is None:
        loudness_text = "unknown"
    else:
        loudness_text = (
            f"{loudness:.2f} LUFS ({'estimate' if d['loudness_is_estimate'] else 'measured'})"
        )
    chunking = d["chunking"]
    chunking_text = (
        f"{chunking.get('chunk_seconds')} s chunks, margin {chunking.get('margin_frames')}, "
        f"crossfade {chunking.get('crossfade_frames')} frames"
        if chunking
        else "-"
    )
    return [
        ("model", f"{d['model_name']} (sha256 {d['model_sha256'][:12]})"),
        ("sample rate", f"{d['source_sample_rate']} Hz (model {d['model_sample_rate']} Hz)"),
        ("channels", str(d["channels"])),
        ("duration", f"{d['duration_seconds']:.3f} s ({d['num_samples']} samples)"),
        (
            "latents",
            f"{d['frames']} frames x {d['latent_channels']} at {d['latent_rate_hz']:.3f} Hz",
        ),
        ("dtype", d["dtype"]),
        ("loudness", loudness_text),
        ("decoded level", _decoded_level(d)),
        ("chunking", chunking_text),
        ("operations", d["operations"]),
        ("written by", f"lincae {d['lincae_version']} (format {d['format_version']})"),
    ]
