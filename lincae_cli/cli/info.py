"""`lincae info`: what a `.lat` file holds, as a table or JSON."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.batch.inputs import InputFile, expand_inputs
from lincae_cli.cli.options import JsonOption
from lincae_cli.cli.render import Reporter, print_json
from lincae_cli.errors import LincaeError
from lincae_cli.paths import LAT_SUFFIX, STDIN_NAME

if TYPE_CHECKING:
    from lincae_cli.latents.latfile import LatentFile

INFO_HELP = """Show what latent files hold: model, sample rate, channels, duration, latent \
frames and rate, storage dtype, loudness and provenance (the operations that made them).

Examples:

  lincae info song.lat

  lincae info latents/ --json

  lincae encode song.wav -o - | lincae info -
"""


def info(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUTS...",
            help=".lat files, folders, glob patterns, or - for stdin.",
            show_default=False,
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    result = Reporter("info", quiet=True, json_output=False, stdout_busy=False).result
    files, failures = expand_inputs(inputs, {LAT_SUFFIX}, ".lat")
    result.fail_all(failures)
    documents = []
    for item in files:
        try:
            documents.append(describe(item))
        except LincaeError as error:
            result.failed(item.name, str(error))
    if json_output:
        print_json(documents)
    else:
        _print_tables(documents)
    raise typer.Exit(1 if result.count("failed") else 0)


def describe(item: InputFile) -> dict[str, Any]:
    """The JSON description of one .lat file (its metadata plus what the tensor says)."""
    from lincae_cli.latents.latfile import lat_from_bytes

    data = _read_bytes(item)
    lat = lat_from_bytes(data, item.name)
    return {
        "file": item.name,
        "dtype": _stored_dtype(data, item.name),
        "frames": lat.frames,
        "latent_channels": lat.latent_channels,
        "duration_seconds": lat.meta.duration_seconds,
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
    if op == "gain":
        shown = ", ".join(_gain_words(entry.get("gain_linear"), shown_at_unity=True)) or "?"
        if "target_lufs" in entry:
            shown += f" to {entry['target_lufs']} LUFS"
        return f"gain({shown})"
    if op in ("mix", "subtract"):
        inputs = [i for i in entry.get("inputs") or [] if isinstance(i, dict)]
        names = [Path(str(i.get("name", "?"))).name for i in inputs]
        if op == "mix":  # subtract's gains (1, -1, -1, ...) are what the name says
            names = [
                " ".join([name, *_gain_words(i.get("gain_linear"), shown_at_unity=False)])
                for name, i in zip(names, inputs, strict=True)
            ]
        return f"{op}({', '.join(names)})"
    return op


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
        table = Table(title=document["file"], show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in _rows(document):
            table.add_row(key, value)
        console.print(table)


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
        ("chunking", chunking_text),
        ("operations", d["operations"]),
        ("written by", f"lincae {d['lincae_version']} (format {d['format_version']})"),
    ]
