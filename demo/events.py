"""The business events the demo's imports raise: D365 (the emulator) posts one import-status event per entity
when an execution ends — each one twice, on purpose — to the app's receiver, which stores it once; the
app's blob trigger then runs its handlers once, here the ``enrich`` handler that reads D365's job record
through OData and stores the event with it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from demo.registration import IMPORT_STATUS_EVENT
from demo.report import FlowResult
from demo.target import FlowFailed, Stack, eventually
from shared.events.layout import state_path
from shared.events.settings import BusinessEventProcessingSettings, BusinessEventSettings
from shared.status import Outcome

__all__ = ["event_problems", "events_flow"]


class _Seen:
    """Events of this run found so far: EventId -> (ExecutionId, status record, raw blob)."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[str, dict[str, Any], str]] = {}
        self.other: set[str] = set()  # events of earlier imports (make run keeps its state)


def _execution_of(stack: Stack, raw_blob: str) -> str | None:
    container, _, name = raw_blob.partition("/")
    data = stack.read(container, name)
    if data is None:
        return None
    value = json.loads(data).get("ExecutionId")
    return str(value) if value else None


def _look(stack: Stack, endpoint_id: str, executions: Mapping[str, str], seen: _Seen) -> list[dict[str, Any]]:
    """Read the delivery log and the app's records of every new event; the deliveries to our endpoint."""
    state = stack.settings.section(BusinessEventSettings).state_container
    params = {"endpoint": endpoint_id, "event": IMPORT_STATUS_EVENT, "limit": 1000}
    deliveries: list[dict[str, Any]] = stack.admin("GET", "business-events/deliveries", params=params)[
        "deliveries"
    ]
    for event_id in {d["event_id"] for d in deliveries} - seen.other:
        record = stack.read_json(state, state_path(event_id))
        if record is None:
            continue  # not received, or not processed yet
        known = seen.found.get(event_id)
        execution = known[0] if known else _execution_of(stack, str(record.get("subject", "")))
        if execution is None:
            continue
        if execution not in executions:
            seen.other.add(event_id)
            continue
        seen.found[event_id] = (execution, record, str(record.get("subject", "")))
    return deliveries


def events_flow(
    stack: Stack, endpoint_id: str, executions: Mapping[str, str], *, timeout: float
) -> FlowResult:
    """Wait until every import execution of this run has its events processed; check they were delivered
    more than once, stored once, processed once and enriched. ``executions``: execution id -> flow name."""
    if not executions:
        raise FlowFailed("no import of this run reached D365, so it raised no business event")
    seen = _Seen()
    deliveries: list[dict[str, Any]] = []

    def settled() -> bool | None:
        nonlocal deliveries
        deliveries = _look(stack, endpoint_id, executions, seen)
        covered = {execution for execution, _, _ in seen.found.values()}
        records = [record for _, record, _ in seen.found.values()]
        pending = any(d["outcome"] == "pending" for d in deliveries if d["event_id"] in seen.found)
        if covered != set(executions) or pending or any(not Outcome(r["outcome"]).final for r in records):
            return None
        return True

    eventually(
        stack,
        settled,
        timeout=timeout,
        what=f"{IMPORT_STATUS_EVENT} of {len(executions)} import(s) processed",
    )
    return _verdict(stack, seen, deliveries)


def _grouped(paths: list[str], what: str) -> list[str]:
    """One line per folder: ``folder/<EventId>.json  (n what)``."""
    folders = Counter(path.rsplit("/", 1)[0] for path in paths)
    return [f"{folder}/<EventId>.json  ({n} {what})" for folder, n in sorted(folders.items())]


def event_problems(
    found: Mapping[str, tuple[str, dict[str, Any], str]],
    deliveries: list[dict[str, Any]],
    *,
    stored: Mapping[str, int],
    documents: Mapping[str, dict[str, Any] | None],
    enriched_container: str,
) -> list[str]:
    """What differs from docs/demo.md's "passes when" for the events of this run (``found``: EventId ->
    (ExecutionId, processing record, raw blob)): each delivered at least twice and every delivery accepted,
    stored once (``stored``: EventId -> stored copies), processed once, enriched (``documents``: an
    enriched output -> its JSON, None when absent) with D365's record."""
    problems: list[str] = []
    copies = Counter(d["event_id"] for d in deliveries if d["event_id"] in found)
    refused = [d for d in deliveries if d["event_id"] in found and d["outcome"] != "delivered"]
    for event_id, (_, record, _) in sorted(found.items()):
        details = record.get("details", {})
        if copies[event_id] < 2:
            problems.append(
                f"event {event_id} was delivered {copies[event_id]} time(s), not twice (the endpoint's "
                "duplicate delivery was off): the receiver's deduplication was not shown"
            )
        if stored.get(event_id, 0) != 1:
            problems.append(f"event {event_id} is stored {stored.get(event_id, 0)} time(s), not once")
        if record["outcome"] != Outcome.SUCCEEDED:
            problems.append(f"event {event_id}: {record.get('message', '')}")
        elif int(details.get("attempts", 0)) != 1:
            problems.append(f"event {event_id} was processed in {details.get('attempts')} attempts")
        outputs = _enriched(record, enriched_container)
        for output in outputs[:1]:
            if not (documents.get(output) or {}).get("record"):
                problems.append(f"event {event_id}: the enriched document {output} has no D365 record")
        if record["outcome"] == Outcome.SUCCEEDED and not outputs:
            problems.append(
                f"event {event_id} was not enriched: BUSINESS_EVENTS_HANDLERS has no enrich handler for "
                f"{IMPORT_STATUS_EVENT} (handled by {', '.join(details.get('completed_handlers', []))})"
            )
    if refused:
        problems.append(
            f"{len(refused)} of {sum(copies.values())} deliveries were not accepted by the receiver"
        )
    return problems


def _enriched(record: Mapping[str, Any], container: str) -> list[str]:
    return [o for o in record.get("details", {}).get("outputs", []) if o.startswith(f"{container}/")]


def _stored_copies(stack: Stack, raw_blob: str, event_id: str) -> int:
    """The blobs holding ``event_id`` in its raw blob's folder (the receiver's one conditional create)."""
    container, _, name = raw_blob.partition("/")
    folder = name.rsplit("/", 1)[0] + "/"
    return sum(1 for found in stack.names(container, folder) if event_id in found.rsplit("/", 1)[-1])


def _verdict(stack: Stack, seen: _Seen, deliveries: list[dict[str, Any]]) -> FlowResult:
    enriched_container = stack.settings.section(BusinessEventProcessingSettings).enriched_container
    raw_container = stack.settings.section(BusinessEventSettings).raw_container
    ours = [d for d in deliveries if d["event_id"] in seen.found]
    copies = Counter(d["event_id"] for d in ours)
    enriched = [o for _, record, _ in seen.found.values() for o in _enriched(record, enriched_container)]
    documents: dict[str, dict[str, Any] | None] = {}
    for _, record, _ in seen.found.values():
        for output in _enriched(record, enriched_container)[:1]:
            container, _, name = output.partition("/")
            data = stack.read(container, name)
            documents[output] = None if data is None else dict(json.loads(data))
    stored = {event_id: _stored_copies(stack, raw, event_id) for event_id, (_, _, raw) in seen.found.items()}
    problems = event_problems(
        seen.found, deliveries, stored=stored, documents=documents, enriched_container=enriched_container
    )
    duplicated = sum(1 for n in copies.values() if n > 1)
    count = len(seen.found)
    headline = (
        f"{count} {IMPORT_STATUS_EVENT} raised by the imports, {len(ours)} deliveries "
        f"({duplicated} event(s) sent twice on purpose)"
    )
    if problems:
        headline += ": " + "; ".join(problems[:3])
    else:
        headline += f", each stored once and processed once, {len(enriched)} enriched with D365's job record"
    received = [raw for _, _, raw in seen.found.values() if raw.startswith(f"{raw_container}/")]
    where = _grouped(received, "as received") + _grouped(enriched, "enriched with the D365 record")
    state = stack.settings.section(BusinessEventSettings).state_container
    where.append(f"{state}/business-events/<EventId>.json  (processing records)")
    return FlowResult("business events", not problems and count > 0, headline, where)
