"""`lincae manifest`: merge or check the manifest of a catalogue encoded with ``--manifest``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from lincae_cli.cli.options import JsonOption
from lincae_cli.cli.render import command_document, emit_json, error_line, warning_line

if TYPE_CHECKING:
    from lincae_cli.batch.catalogue import CatalogueReport

MANIFEST_HELP = """Merge or check the manifest of a catalogue encoded with `encode --manifest`.

Each process of `lincae encode DIR -o OUT --manifest` (one per GPU under torchrun) appends a \
line per input to its own part in OUT/.lincae-manifest/. This merges the parts into \
OUT/manifest.jsonl, one line per input (output, duration, channels, frames, sample rate, \
loudness, model and its sha256, lincae version), lists failed inputs with their reasons and \
inputs that no process reported (rerun the encode with --skip-existing to finish them). \
--check compares OUT/manifest.jsonl with the .lat files: missing, extra and corrupt ones. \
Exit code 1 unless the catalogue is complete.

Examples:

  torchrun --nproc-per-node 8 --no-python lincae encode music/ -o lat/ --manifest --skip-existing

  lincae manifest lat/

  lincae manifest lat/ --check --json
"""

_SHOWN = 5  # names listed per problem before "and N more"


def manifest(
    folder: Annotated[
        str,
        typer.Argument(
            metavar="FOLDER", help="The -o folder of encode --manifest.", show_default=False
        ),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Do not merge: check OUT/manifest.jsonl against the .lat files (reads them all).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    from lincae_cli.batch.catalogue import check_manifest, merge_manifest

    report = check_manifest(folder) if check else merge_manifest(folder)
    _show(report, check)
    if json_output:
        emit_json(_document(report))
    raise typer.Exit(0 if report.complete else 1)


def _document(report: CatalogueReport) -> dict[str, Any]:
    """The ``--json`` document: the failed inputs as ``files``, the report's lists beside."""
    from lincae_cli.batch.result import entry

    files = [entry(line["input"], line.get("output"), "failed", line.get("error") or "failed")
             for line in report.failed]  # fmt: skip
    summary = report.to_json()
    summary["failed"] = len(files)  # a count, as in every document; the inputs are the files
    return command_document("manifest", _incomplete(report), files, **summary)


def _incomplete(report: CatalogueReport) -> str | None:
    """Why the catalogue is not complete, in one line (None when it is)."""
    if report.complete:
        return None
    counts = {
        "failed": len(report.failed),
        "pending": len(report.pending),
        "plan problem(s)": len(report.plan_problems),
        "missing": len(report.missing),
        "extra": len(report.extra),
        "corrupt": len(report.corrupt),
    }
    problems = [f"{count} {what}" for what, count in counts.items() if count]
    if report.stale:
        problems.append("manifest.jsonl older than the parts")
    return "catalogue incomplete: " + ", ".join(problems)


def _show(report: CatalogueReport, checked: bool) -> None:
    for line in report.failed:
        error_line(str(line.get("error") or f"{line['input']}: failed"))
    _list(report.pending, "input(s) planned but never reported: rerun the encode with "
          "--skip-existing to finish them")  # fmt: skip
    for problem in report.plan_problems:
        error_line(f"{problem}; rerun the encode with --skip-existing to be sure it is complete")
    _list(report.missing, "output(s) in the manifest but not on disk")
    _list(report.extra, ".lat file(s) on disk but not in the manifest")
    for problem in report.corrupt:
        error_line(problem)
    if report.stale:
        folder = report.manifest.parent
        error_line(
            f"{report.manifest}: older than the parts; merge again: lincae manifest {folder}"
        )
    if report.torn:
        warning_line(
            f"skipped {len(report.torn)} torn line(s) (a process died while writing): "
            + _names(report.torn)
        )
    if len(report.models) > 1:
        models = ", ".join(f"{model} ({count})" for model, count in report.models.items())
        warning_line(f"outputs from {len(report.models)} models: {models}")
    seconds = report.audio_seconds
    audio = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"
    verb = "checked" if checked else "wrote"
    typer.echo(
        f"lincae: manifest: {len(report.ok)} done ({audio} of audio), "
        f"{len(report.failed)} failed, {len(report.pending)} pending; {verb} {report.manifest}",
        err=True,
    )


def _list(names: list[str], what: str) -> None:
    if names:
        error_line(f"{len(names)} {what}: {_names(names)}")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
