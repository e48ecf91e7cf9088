"""The business-event side of the overview: recent events with duplicate and out-of-order markers.

What is stored (``shared.events.layout``, ``sequence``): one processing record per event in
``{state}/business-events/{EventId}.json`` (a ``shared.status`` record whose ``correlation`` names the
business event, legal entity and ControlNumber, and whose ``details.sequence`` holds the ControlNumber
verdict of its latest attempt), retry markers in ``business-events-retry/`` and poison records.

Markers:

- *out of order*: ``details.sequence.out_of_order`` — it came after a newer event of its kind was handled.
- *duplicate*: D365 sent the same business event again under another EventId: two events shown with the
  same business event, legal entity and ControlNumber (the later ones are marked), or an event whose first
  attempt found its own ControlNumber already at the high-water mark. A redelivery of the *same* EventId
  is answered "duplicate" on receipt and never stored twice, so it has no row of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.events.layout import RETRY_PREFIX, STATE_PREFIX
from shared.events.settings import BusinessEventSettings
from shared.pipelines.overview.listing import Lister
from shared.pipelines.overview.model import EventRow, Failure, Overview, as_dict

__all__ = ["event_row", "gather_events", "mark_duplicates"]


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def event_row(record: dict[str, Any], record_path: str, raw_container: str) -> EventRow:
    correlation, details = as_dict(record.get("correlation")), as_dict(record.get("details"))
    sequence = as_dict(details.get("sequence"))
    subject = str(record.get("subject") or "")
    attempts = _int(details.get("attempts")) or 0
    row = EventRow(
        event_id=str(correlation.get("event_id") or record_path.rsplit("/", 1)[-1].removesuffix(".json")),
        business_event_id=str(correlation.get("business_event_id") or ""),
        legal_entity=str(correlation.get("legal_entity") or ""),
        control_number=_int(correlation.get("control_number")),
        outcome=str(record.get("outcome") or ""),
        message=str(record.get("message") or ""),
        attempts=attempts,
        created=str(record.get("created") or ""),
        updated=str(record.get("updated") or ""),
        record_path=record_path,
        raw_path=subject if subject.startswith(f"{raw_container}/") else f"{raw_container}/{subject}",
        out_of_order=sequence.get("out_of_order") is True,
        high_water_mark=_int(sequence.get("high_water_mark")),
        poisoned=details.get("poisoned") is True,
    )
    mark, number = row.high_water_mark, row.control_number
    if attempts == 1 and number is not None and mark == number:  # seen before this event's first attempt
        row.duplicate = True
        row.duplicate_reason = f"ControlNumber {number} was already handled for this business event"
    return row


def mark_duplicates(rows: list[EventRow]) -> None:
    """Mark every event after the first of the same (business event, legal entity, ControlNumber)."""
    first: dict[tuple[str, str, int], EventRow] = {}
    # the original is the one whose own first attempt raised the mark (records only keep whole seconds)
    for row in sorted(rows, key=lambda r: (r.duplicate, r.created, r.event_id)):
        if row.control_number is None:
            continue
        key = (row.business_event_id.lower(), row.legal_entity.lower(), row.control_number)
        earlier = first.setdefault(key, row)
        if earlier is not row:
            row.duplicate = True
            row.duplicate_reason = f"same ControlNumber {row.control_number} as event {earlier.event_id}"


def gather_events(
    overview: Overview, lister: Lister, settings: BusinessEventSettings, *, since: datetime, recent: int
) -> None:
    """Fill ``overview.events``, ``event_counts`` and the poisoned events among ``failures``."""
    records = [
        b for b in lister.blobs(settings.state_container, STATE_PREFIX)
        if b.name.endswith(".json") and b.last_modified >= since
    ]  # fmt: skip
    retrying = lister.blobs(settings.state_container, RETRY_PREFIX)
    poisoned = lister.blobs(settings.poison_container)
    overview.event_counts = {
        "updated": len(records),
        "retrying": len(retrying),
        "poisoned": len(poisoned),
    }
    rows: list[EventRow] = []
    for blob in sorted(records, key=lambda b: b.last_modified, reverse=True)[:recent]:
        record = lister.read_json(blob.container, blob.name)
        if record is not None:
            rows.append(event_row(record, blob.path, settings.raw_container))
    mark_duplicates(rows)
    overview.events = rows
    for row in rows:
        if row.poisoned or row.outcome == "failed":
            overview.failures.append(
                Failure(
                    kind="business-event",
                    subject=row.raw_path,
                    outcome="poisoned" if row.poisoned else row.outcome,
                    message=row.message,
                    at=row.updated,
                    record_path=row.record_path,
                    reason_code=row.business_event_id or None,
                )
            )
