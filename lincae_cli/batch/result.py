"""What happened to every input of a batch: a plain result the library returns and the CLI
renders (the records are the ``files`` of ``--json``, docs/cli.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lincae_cli.batch.inputs import Failure
from lincae_cli.paths import output_name

Record = dict[str, Any]
"""One input's outcome: every key of `ENTRY_KEYS` (None where it does not apply), then what
the command adds (a mix's ``inputs``, a gain's ``gain_db``, ``info``'s metadata)."""

ENTRY_KEYS = (
    "input",  # the input as given (<stdin> for -); a mix's inputs joined by ", "
    "output",  # the file written (<stdout> for -), or None
    "status",  # "ok", "skipped" or "failed"
    "error",  # the one-line reason when failed, else None
    "duration_seconds",  # length of the audio
    "sample_rate",  # Hz: the source's (latents) or the written audio's
    "channels",
    "frames",  # latent frames
    "loudness_lufs",  # integrated loudness recorded at encoding
    "peak",  # decoded audio only: peak sample magnitude
    "clipped_samples",  # decoded audio only: samples beyond full scale
)


def entry(
    name: str, output: str | None, status: str, error: str | None = None, **fields: Any
) -> Record:
    """A record with every key of `ENTRY_KEYS`: the given ones, None for the others."""
    record: Record = dict.fromkeys(ENTRY_KEYS)
    record.update(input=name, output=output, status=status, error=error, **fields)
    return record


@dataclass
class BatchResult:
    """Records of a batch in the order things ended, and facts about the run (``info``: model,
    device, torchrun rank). ``on_record`` sees every record as it is added, so that errors can
    be shown while a long batch goes on."""

    command: str
    records: list[Record] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    on_record: Callable[[Record], None] | None = None

    def _add(self, record: Record) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def ok(self, name: str, output: str | None, **fields: Any) -> None:
        shown = None if output is None else output_name(output)
        self._add(entry(name, shown, "ok", **fields))

    def skipped(self, name: str, output: str) -> None:
        self._add(entry(name, output, "skipped"))

    def failed(self, name: str, message: str) -> None:
        self._add(entry(name, None, "failed", message))

    def fail_all(self, failures: list[Failure]) -> None:
        for failure in failures:
            self.failed(failure.name, failure.message)

    def count(self, status: str) -> int:
        return sum(1 for record in self.records if record["status"] == status)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in the records that are done."""
        return sum(
            float(record.get("duration_seconds") or 0.0)
            for record in self.records
            if record["status"] == "ok"
        )
