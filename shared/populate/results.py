"""Per-record results of a populate run and their summary (shown by the status record and the HTTP answer)."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.redact import redact_text
from shared.status import Outcome

__all__ = ["PopulateResult", "RecordOutcome", "RecordResult"]


class RecordOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # D365 already held these values: nothing was written
    ACCEPTED = "accepted"  # a custom service ran without error (and did not say what it did)
    FAILED = "failed"


@dataclass
class RecordResult:
    record: int  # 1-based position in the input
    key: dict[str, Any]
    outcome: RecordOutcome
    error: str | None = None  # D365's own message (innererror) or the conversion problem
    line: int | None = None
    note: str | None = None  # e.g. "confirmed by reading it back after an unanswered batch"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record, "key": self.key, "outcome": str(self.outcome)}
        if self.line is not None:
            out["line"] = self.line
        if self.error is not None:
            out["error"] = redact_text(self.error)
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass
class PopulateResult:
    target: str  # "CustomersV3" or "group/service/operation"
    mode: str
    records: list[RecordResult] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)  # $batch requests, re-sends, ...

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(str(r.outcome) for r in self.records)
        return {str(o): found.get(str(o), 0) for o in RecordOutcome}

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.outcome is RecordOutcome.FAILED)

    @property
    def outcome(self) -> Outcome:
        if not self.failed:
            return Outcome.SUCCEEDED
        if self.failed == len(self.records):
            return Outcome.FAILED
        return Outcome.PARTIALLY_SUCCEEDED

    def message(self) -> str:
        counts = self.counts
        done = ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no records"
        if self.outcome is Outcome.SUCCEEDED:
            return f"{len(self.records)} record(s) written to {self.target} ({self.mode}): {done}"
        first = next(r for r in self.records if r.outcome is RecordOutcome.FAILED)
        where = f"record {first.record}" + (f" (line {first.line})" if first.line else "")
        partial = "partially written" if self.outcome is Outcome.PARTIALLY_SUCCEEDED else "not written"
        return (
            f"{len(self.records)} record(s) {partial} to {self.target} ({self.mode}): {done}; first failure, "
            f"{where}: {redact_text(first.error or 'failed')}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "outcome": str(self.outcome),
            "counts": self.counts,
            "records": [r.to_dict() for r in self.records],
            "stats": dict(self.stats),
        }
