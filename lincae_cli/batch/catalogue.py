"""`lincae manifest OUT/`: merge the parts of a catalogue's manifest into ``OUT/manifest.jsonl``,
or check that file against the ``.lat`` files on disk. Both return a `CatalogueReport`; the
CLI renders it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lincae_cli.atomic import atomic_write_bytes
from lincae_cli.batch.inputs import expand_inputs
from lincae_cli.batch.manifest import (
    MANIFEST_NAME,
    PARTS_FOLDER,
    Line,
    Parts,
    line_key,
    merge_lines,
    read_lines,
    read_parts,
)
from lincae_cli.errors import LincaeError
from lincae_cli.paths import LAT_SUFFIX


@dataclass
class CatalogueReport:
    """What a merge or a check found. Every list holds one-line descriptions or lines."""

    manifest: Path
    lines: list[Line] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # planned, never reported
    plan_problems: list[str] = field(default_factory=list)  # ranks that disagreed or vanished
    torn: list[str] = field(default_factory=list)  # part:line skipped
    missing: list[str] = field(default_factory=list)  # listed ok, not on disk (check)
    extra: list[str] = field(default_factory=list)  # .lat on disk, not listed (check)
    corrupt: list[str] = field(default_factory=list)  # unreadable or unlike its line (check)
    stale: bool = False  # the parts say more than manifest.jsonl (check)

    @property
    def failed(self) -> list[Line]:
        return [line for line in self.lines if line["status"] == "failed"]

    @property
    def ok(self) -> list[Line]:
        return [line for line in self.lines if line["status"] == "ok"]

    @property
    def models(self) -> dict[str, int]:
        """How many outputs each model (name and sha256 prefix) made."""
        return dict(
            Counter(f"{line.get('model')} {str(line.get('model_sha256'))[:12]}" for line in self.ok)
        )

    @property
    def audio_seconds(self) -> float:
        return sum(float(line.get("duration_seconds") or 0.0) for line in self.ok)

    @property
    def complete(self) -> bool:
        """Every input done, nothing missing, extra, corrupt, pending or stale."""
        problems = [self.failed, self.pending, self.plan_problems, self.missing, self.extra]
        return not any(problems) and not self.corrupt and not self.stale

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "ok": len(self.ok),
            "failed": [
                {"input": line["input"], "error": line.get("error")} for line in self.failed
            ],
            "audio_seconds": round(self.audio_seconds, 3),
            "models": self.models,
            "pending": self.pending,
            "plan_problems": self.plan_problems,
            "torn_lines": self.torn,
            "missing": self.missing,
            "extra": self.extra,
            "corrupt": self.corrupt,
            "stale": self.stale,
            "complete": self.complete,
        }


def merge_manifest(out: str | Path) -> CatalogueReport:
    """Merge every part under ``out`` into ``out/manifest.jsonl`` (written atomically), one
    line per input, sorted by output; report failures, inputs never reported and ranks whose
    plans disagree."""
    out = _catalogue_folder(out)
    parts = read_parts(out)
    if not parts.lines and not parts.plans:
        raise LincaeError(f"{out}: no manifest parts in {PARTS_FOLDER}/ (encode with --manifest)")
    report = CatalogueReport(out / MANIFEST_NAME, merge_lines(parts.lines), torn=parts.torn)
    _check_plans(parts, report)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in report.lines)
    atomic_write_bytes(report.manifest, text.encode())
    return report


def check_manifest(out: str | Path) -> CatalogueReport:
    """Check ``out/manifest.jsonl`` against the disk: every listed output must be a valid .lat
    that agrees with its line (channels, frames, model), and every .lat must be listed."""
    from lincae_cli.latents.latfile import read_lat

    out = _catalogue_folder(out)
    manifest = out / MANIFEST_NAME
    if not manifest.is_file():
        raise LincaeError(f"{manifest}: no such file (merge the parts: lincae manifest {out})")
    lines, torn = read_lines(manifest)
    report = CatalogueReport(manifest, lines, torn=[f"{manifest}:{n}" for n in torn])
    parts = read_parts(out)
    _check_plans(parts, report)
    # Parts newer than the file (none when OUT was copied without its hidden folder).
    report.stale = bool(parts.lines) and _signature(merge_lines(parts.lines)) != _signature(lines)
    listed = set()
    for line in report.ok:
        listed.add(line["output"])
        path = out / line["output"]
        if not path.exists():
            report.missing.append(line["output"])
            continue
        try:
            lat = read_lat(path)
        except LincaeError as error:
            report.corrupt.append(str(error))
            continue
        found = {
            "channels": lat.channels,
            "frames": lat.frames,
            "model_sha256": lat.meta.model_sha256,
        }
        differences = [
            f"{key} {line.get(key)} in the manifest, {value} in the file"
            for key, value in found.items()
            if line.get(key) != value
        ]
        if differences:
            report.corrupt.append(f"{path}: unlike its manifest line ({'; '.join(differences)})")
    on_disk, _ = expand_inputs([str(out)], {LAT_SUFFIX}, ".lat")
    report.extra = sorted(
        item.relative.as_posix()
        for item in on_disk
        if item.relative is not None and item.relative.as_posix() not in listed
    )
    return report


def _catalogue_folder(out: str | Path) -> Path:
    folder = Path(out)
    if not folder.is_dir():
        raise LincaeError(f"{folder}: not a folder (give the -o folder of encode --manifest)")
    return folder


def _check_plans(parts: Parts, report: CatalogueReport) -> None:
    """Inputs planned but never reported (pending), and whether the ranks of the latest attempt
    all recorded the same plan (a rank without one may have left work nobody knows of: rerun
    with --skip-existing to be sure). Earlier attempts are superseded by the latest."""
    reported = {line_key(line) for line in report.lines}
    pending = set()
    attempts: dict[str, list[dict[str, Any]]] = {}
    for plan in parts.plans:
        attempts.setdefault(str(plan.get("attempt")), []).append(plan)
        pending.update(output for _, output in plan.get("outputs", []) if output not in reported)
    report.pending = sorted(pending)
    if not attempts:
        return
    attempt, plans = max(attempts.items(), key=lambda item: max(_times(item[1])))
    if not all(plan.get("shared_attempt", True) for plan in plans):
        return  # ranks launched without torchrun's run id: no attempt to gather them by
    world_size = max(int(plan.get("world_size", 1)) for plan in plans)
    absent = sorted(set(range(world_size)) - {int(plan.get("rank", 0)) for plan in plans})
    if absent:
        report.plan_problems.append(f"attempt {attempt}: rank(s) {absent} recorded no plan")
    if len({plan.get("plan_sha256") for plan in plans}) > 1:
        report.plan_problems.append(
            f"attempt {attempt}: ranks planned different work (inputs changed meanwhile?)"
        )


def _times(plans: list[dict[str, Any]]) -> list[str]:
    return [str(plan.get("time", "")) for plan in plans]


def _signature(lines: list[Line]) -> dict[str, tuple[str, Any]]:
    return {line_key(line): (line["status"], line.get("time")) for line in lines}
