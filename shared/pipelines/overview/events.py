"""The business-event side of the overview: recent events with duplicate and out-of-order markers, and the
poisoned ones among the failures.

What is stored (``shared.events.layout``): each event as received in
``{raw}/{BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json`` (created once: its last-modified
time is its receipt), one processing record per event in ``{state}/business-events/{EventId}.json`` (a
``shared.status`` record whose ``correlation`` names the business event, legal entity and ControlNumber,
and whose ``details.sequence`` holds the ControlNumber verdict of its latest attempt), retry markers in
``business-events-retry/`` and one poison record per poisoned event in ``{poison}/``.

Where each fact comes from, so it stays right after millions of events (the state folder is flat and in
EventId order, so a capped listing of it is an arbitrary subset):

- *recent events*: the raw container's date folders of the window's days (plus ``_LATE_DAYS`` before it:
  the folder's date is the event's own time, and D365 may deliver late), only blobs received within the
  window, newest receipt first; each shown row reads its processing record (none yet: "received").
- *failures*: the poison records themselves (newest first) — an event is in the poison container exactly
  while it is poisoned (a replay deletes its record).
- counts: raw blobs received in the window, retry markers, poison records.

Markers:

- *out of order*: ``details.sequence.out_of_order`` — it came after a newer event of its kind was handled.
- *duplicate*: D365 sent the same business event again under another EventId: two events shown with the
  same business event, legal entity and ControlNumber (the later ones are marked), or an event whose first
  attempt found its own ControlNumber already at the high-water mark.
- *redelivered ×N*: D365 sent the *same* EventId N more times. Those deliveries are answered "duplicate"
  on receipt and never stored or processed again, so they have no row of their own; the receiver leaves
  one small blob per redelivery in ``{state}/business-events-redeliveries/{EventId}/``
  (``business_event_redeliveries``) and each shown row lists its folder (one listing per row):
  ``deliveries`` = 1 + that count, a lower bound (a record the receiver could not write is only logged).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from shared.events.layout import RETRY_PREFIX, state_path
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_event_redeliveries import redeliveries_prefix
from shared.pipelines.overview.imports import day_prefixes
from shared.pipelines.overview.listing import Listed, Lister
from shared.pipelines.overview.model import EventRow, Failure, Overview, as_dict, as_list

__all__ = ["count_redeliveries", "event_row", "gather_events", "mark_duplicates"]

#: Days before the window whose raw folders are listed too (an event delivered up to this late is seen).
_LATE_DAYS = 2
_ERRORS_SHOWN = 3
_FRACTION = re.compile(r"\.\d+(?=Z|[+-]\d\d:\d\d$)")  # whole seconds, like every other record's times


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def event_row(record: dict[str, Any], record_path: str | None, raw_container: str) -> EventRow:
    correlation, details = as_dict(record.get("correlation")), as_dict(record.get("details"))
    sequence = as_dict(details.get("sequence"))
    subject = str(record.get("subject") or "")
    attempts = _int(details.get("attempts")) or 0
    row = EventRow(
        event_id=str(correlation.get("event_id") or PurePosixPath(subject or record_path or "").stem),
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


def count_redeliveries(rows: list[EventRow], lister: Lister, state_container: str) -> None:
    """Set each row's ``deliveries`` and ``last_redelivered`` from its redelivery records."""
    for row in rows:
        records = lister.blobs(state_container, redeliveries_prefix(row.event_id))
        row.deliveries = 1 + len(records)
        if records:
            row.last_redelivered = _iso(max(record.last_modified for record in records))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _received(lister: Lister, raw: str, *, now: datetime, since: datetime) -> list[Listed]:
    """Raw events received within the window, newest first (``{be}/{le}/{yyyy}/{mm}/{dd}/`` folders)."""
    days = day_prefixes(since - timedelta(days=_LATE_DAYS), now + timedelta(days=1))  # +1: clock skew
    found: list[Listed] = []
    for event_folder in lister.folders(raw):
        for entity_folder in lister.folders(raw, event_folder):
            for day in reversed(days):
                found += [
                    b for b in lister.blobs(raw, f"{entity_folder}{day}")
                    if b.name.endswith(".json") and b.last_modified >= since
                ]  # fmt: skip
    found.sort(key=lambda b: (b.last_modified, b.name), reverse=True)
    return found


def _unprocessed_row(blob: Listed) -> EventRow:
    """An event stored but without a processing record yet (its trigger has not run, or not got far)."""
    segments = blob.name.split("/")
    at = _iso(blob.last_modified)
    return EventRow(
        event_id=PurePosixPath(blob.name).stem,
        business_event_id=segments[0] if len(segments) > 1 else "",
        legal_entity=segments[1] if len(segments) > 2 else "",
        control_number=None,
        outcome="received",
        message="stored; processing has not begun",
        attempts=0,
        created=at,
        updated=at,
        record_path=None,
        raw_path=blob.path,
        received=at,
    )


def _poison_failure(record: dict[str, Any], blob: Listed, settings: BusinessEventSettings) -> Failure:
    event_id = str(record.get("event_id") or "")
    attempts = record.get("attempts")
    error = str(record.get("error") or "")
    if record.get("permanent") is True:
        message = f"poisoned (a permanent error): {error}"
    elif isinstance(attempts, int):
        message = f"poisoned after {attempts} attempt(s): {error}"
    else:
        message = f"poisoned: {error}"
    errors = [str(e.get("error") or "") for e in as_list(record.get("errors")) if isinstance(e, dict)]
    return Failure(
        kind="business-event",
        subject=str(record.get("blob") or blob.path),
        outcome="poisoned",
        message=message,
        at=_FRACTION.sub("", str(record.get("poisoned_at") or "")) or _iso(blob.last_modified),
        # the event's processing record (attempts, errors, sequence); the poison record for an unreadable blob
        record_path=f"{settings.state_container}/{state_path(event_id)}" if event_id else blob.path,
        errors=[e for e in errors[-_ERRORS_SHOWN:] if e and e != error],
    )


def gather_events(
    overview: Overview,
    lister: Lister,
    settings: BusinessEventSettings,
    *,
    now: datetime,
    since: datetime,
    recent: int,
) -> None:
    """Fill ``overview.events``, ``event_counts`` and the poisoned events among ``failures``."""
    received = _received(lister, settings.raw_container, now=now, since=since)
    retrying = lister.blobs(settings.state_container, RETRY_PREFIX)
    poisoned = lister.blobs(settings.poison_container)
    overview.event_counts = {
        "received": len(received),
        "retrying": len(retrying),
        "poisoned": len(poisoned),
    }
    rows: list[EventRow] = []
    for blob in received[:recent]:
        path = state_path(PurePosixPath(blob.name).stem)
        record = lister.read_json(settings.state_container, path)
        if record is None:
            rows.append(_unprocessed_row(blob))
            continue
        row = event_row(record, f"{settings.state_container}/{path}", settings.raw_container)
        row.received = _iso(blob.last_modified)
        rows.append(row)
    mark_duplicates(rows)
    count_redeliveries(rows, lister, settings.state_container)
    overview.events = rows
    for blob in sorted(poisoned, key=lambda b: (b.last_modified, b.name), reverse=True)[:recent]:
        poison = lister.read_json(blob.container, blob.name)
        if poison is not None:
            overview.failures.append(_poison_failure(poison, blob, settings))
