"""Per-record results of a populate run and their summary (shown by the status record and the HTTP answer)."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.redact import redact_text
from shared.status import Outcome

__all__ = ["WRITTEN", "PopulateResult", "RecordOutcome", "RecordResult"]


class RecordOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # D365 already held these values: nothing was written
    ACCEPTED = "accepted"  # a custom service ran without error (and did not say what it did)
    FAILED = "failed"
    # D365 was unavailable (connection, 5xx, throttled past the retries, token) or the run's time limit
    # ran out before the record was written: nothing was written for it, sending it again is safe
    NOT_ATTEMPTED = "not_attempted"


#: Outcomes that mean D365 holds what the record asked for.
WRITTEN = (RecordOutcome.CREATED, RecordOutcome.UPDATED, RecordOutcome.ACCEPTED)


@dataclass
class RecordResult:
    record: int  # 1-based position in the input
    key: dict[str, Any]
    outcome: RecordOutcome
    error: str | None = None  # D365's own message (innererror) or the conversion problem
    line: int | None = None
    note: str | None = None  # e.g. "confirmed by reading it back after an unanswered batch"
    uncertain: bool = False  # a custom service call without an answer: it may have run (not re-sent)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record, "key": self.key, "outcome": str(self.outcome)}
        if self.line is not None:
            out["line"] = self.line
        if self.error is not None:
            out["error"] = redact_text(self.error)
        if self.note is not None:
            out["note"] = self.note
        if self.uncertain:
            out["uncertain"] = True
        return out


@dataclass
class PopulateResult:
    target: str  # "CustomersV3" or "group/service/operation"
    mode: str
    records: list[RecordResult] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)  # $batch requests, re-sends, ...
    unavailable: str | None = None  # why records were not attempted (D365 unavailable, time limit)

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(str(r.outcome) for r in self.records)
        return {str(o): found.get(str(o), 0) for o in RecordOutcome}

    @property
    def failed(self) -> int:
        """Records not written: refused, failed or not attempted."""
        return sum(1 for r in self.records if r.outcome in _NOT_DONE)

    @property
    def not_attempted(self) -> int:
        return sum(1 for r in self.records if r.outcome is RecordOutcome.NOT_ATTEMPTED)

    @property
    def written(self) -> int:
        """Records D365 now holds because of this run (created, updated, accepted)."""
        return sum(1 for r in self.records if r.outcome in WRITTEN)

    @property
    def uncertain(self) -> int:
        """Records whose call may have run without an answer (not safe to send again automatically)."""
        return sum(1 for r in self.records if r.uncertain)

    @property
    def retry_later(self) -> bool:
        """D365 was unavailable (or time ran out) and this run wrote nothing nor left anything uncertain:
        run it all again later."""
        return self.unavailable is not None and self.written == 0 and not self.uncertain

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
        first = next(
            (r for r in self.records if r.outcome is RecordOutcome.FAILED),
            next(r for r in self.records if r.outcome in _NOT_DONE),
        )
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
            **({"unavailable": redact_text(self.unavailable)} if self.unavailable else {}),
        }


_NOT_DONE = (RecordOutcome.FAILED, RecordOutcome.NOT_ATTEMPTED)
