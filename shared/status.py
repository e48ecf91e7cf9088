"""Machine-readable status records: every input ends next to one, saying what happened and why.

A record is JSON stored beside the input's final location (``<name>.status.json``) and in the state area
while the work is in flight. Its shape is stable for operators and downstream tools:

    {"kind": "import", "subject": "inbound/sales/orders.csv", "outcome": "failed",
     "message": "D365 finished the import with errors", "created": "...", "updated": "...",
     "correlation": {"execution_id": "...", "message_id": "...", "file": "orders.csv"},
     "d365": {...D365's own status and error detail...}, "history": [{"at", "outcome", "message"}]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

STATUS_SUFFIX = ".status.json"


class Outcome(StrEnum):
    """Where a unit of work stands; the last four are final."""

    RECEIVED = "received"
    SENT = "sent"
    IN_PROGRESS = "in_progress"
    STUCK = "stuck"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # bad input: nothing was sent to D365
    DUPLICATE = "duplicate"  # already done before: skipped on purpose

    @property
    def final(self) -> bool:
        return self in {
            Outcome.SUCCEEDED,
            Outcome.PARTIALLY_SUCCEEDED,
            Outcome.FAILED,
            Outcome.REJECTED,
            Outcome.DUPLICATE,
        }


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class StatusRecord:
    kind: str  # "import", "export", "event", ...
    subject: str  # what the record is about: the input blob path, the message or event id
    outcome: Outcome
    message: str
    correlation: dict[str, str] = field(default_factory=dict)
    d365: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    history: list[dict[str, str]] = field(default_factory=list)

    def advance(self, outcome: Outcome, message: str, **d365: Any) -> StatusRecord:
        """Move to a new outcome, keeping the previous one in the history."""
        self.history.append({"at": self.updated, "outcome": str(self.outcome), "message": self.message})
        self.outcome, self.message, self.updated = outcome, message, utc_now()
        self.d365.update(d365)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusRecord:
        values = dict(data)
        values["outcome"] = Outcome(values["outcome"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def status_name(blob_name: str) -> str:
    """The status record's blob name for an input stored as ``blob_name``."""
    return blob_name + STATUS_SUFFIX
