"""What an operations overview holds: plain data, JSON-ready (``Overview.to_dict``), rendered elsewhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "EVENTS",
    "EXPORTS",
    "IMPORTS",
    "EventRow",
    "ExportRow",
    "Failure",
    "InflightJob",
    "Overview",
    "RouteCounts",
]

#: The overview's parts (``Overview.unknown`` names those that could not be gathered).
IMPORTS, EVENTS, EXPORTS = "imports", "business events", "exports"


@dataclass
class RouteCounts:
    """Files of one import route: waiting in inbound, in flight in D365, and finished within the window."""

    route: str
    waiting: int = 0
    in_flight: int = 0
    stuck: int = 0
    archived: int = 0
    failed: int = 0


@dataclass
class InflightJob:
    """An import D365 is working on (``state/jobs/{job}.json``)."""

    job_id: str
    route: str
    file: str
    target: str  # "package" or "recurring"
    sent_at: str
    minutes: float  # since it was sent
    polls: int
    outcome: str  # sent, in_progress or stuck (what the monitor recorded)
    stuck: bool
    recorded_status: str  # D365's status as the import monitor last saw it
    d365_status: str | None = None  # asked live for this overview (None: not asked)
    d365_error: str | None = None  # why asking failed
    execution_id: str | None = None
    message_id: str | None = None
    record_path: str | None = None  # the status record beside the in-flight input


@dataclass
class Failure:
    """Something that ended badly: an import in the errors location, a poisoned event, a failed export."""

    kind: str  # import, business-event, export, dmf-export
    subject: str
    outcome: str
    message: str
    at: str
    record_path: str
    route: str | None = None
    d365_status: str | None = None
    error_count: int | None = None
    errors: list[str] = field(default_factory=list)  # D365's first error messages
    error_files: list[str] = field(default_factory=list)
    summary_page_url: str | None = None
    reason_code: str | None = None
    resubmitted: dict[str, Any] | None = None  # ``ops resubmit`` put the input back: at, to, attempt


@dataclass
class EventRow:
    """A received business event and its processing record (``outcome`` "received" while it has none),
    with what its ControlNumber says about order and repeats, and how often D365 sent its EventId."""

    event_id: str
    business_event_id: str
    legal_entity: str
    control_number: int | None
    outcome: str
    message: str
    attempts: int
    created: str
    updated: str
    record_path: str | None  # None: no processing record yet
    raw_path: str
    received: str = ""  # when the raw blob was stored
    out_of_order: bool = False
    high_water_mark: int | None = None
    duplicate: bool = False
    duplicate_reason: str | None = None
    poisoned: bool = False
    deliveries: int = 1  # times the receiver got this EventId (a lower bound: business_event_redeliveries)
    last_redelivered: str | None = None  # when the latest redelivery was answered "duplicate"


@dataclass
class ExportRow:
    kind: str  # export (recurring dequeue) or dmf-export
    name: str  # activity or DMF job
    subject: str
    outcome: str
    message: str
    at: str
    record_path: str


@dataclass
class Overview:
    generated_at: str
    window_hours: float
    routes: list[RouteCounts] = field(default_factory=list)
    in_flight: list[InflightJob] = field(default_factory=list)
    in_flight_total: int = 0  # job records listed; more than ``in_flight`` when past the read limit
    failures: list[Failure] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)  # received (window), retrying, poisoned
    exports: list[ExportRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # listings cut at the cap, D365 not asked...
    problems: list[str] = field(default_factory=list)  # a part that could not be gathered, and why
    unknown: list[str] = field(default_factory=list)  # parts not gathered: imports, business events, exports

    @property
    def stuck(self) -> list[InflightJob]:
        return [job for job in self.in_flight if job.stuck]

    def totals(self) -> dict[str, int]:
        keys = ("waiting", "in_flight", "stuck", "archived", "failed")
        return {key: sum(int(getattr(r, key)) for r in self.routes) for key in keys}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = None if IMPORTS in self.unknown else self.totals()
        data["stuck"] = [job.job_id for job in self.stuck]
        return data


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else empty (stored records are read defensively)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
