"""What happened to every input of a batch: a plain result the library returns and the CLI
renders (the records are the ``files`` of ``--json``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lincae_cli.batch.inputs import Failure
from lincae_cli.paths import output_name

Record = dict[str, Any]
"""``{"input", "output", "status": "ok"|"skipped"|"failed", ...}``; failed ones have ``error``."""


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

    def ok(self, name: str, output: str, **fields: Any) -> None:
        self._add({"input": name, "output": output_name(output), "status": "ok", **fields})

    def skipped(self, name: str, output: str) -> None:
        self._add({"input": name, "output": output, "status": "skipped"})

    def failed(self, name: str, message: str) -> None:
        self._add({"input": name, "status": "failed", "error": message})

    def fail_all(self, failures: list[Failure]) -> None:
        for failure in failures:
            self.failed(failure.name, failure.message)

    def count(self, status: str) -> int:
        return sum(1 for record in self.records if record["status"] == status)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in the records that are done."""
        return sum(
            float(record.get("duration_seconds", 0.0))
            for record in self.records
            if record["status"] == "ok"
        )
