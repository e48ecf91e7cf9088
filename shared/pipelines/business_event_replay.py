"""Business events retried and replayed: the due attempts the retry timer runs, and operators' replays.

A failed attempt leaves a retry marker (``state/business-events-retry/{EventId}.json``, its due time in the
blob metadata, so one listing finds every due event); poisoned events have a record in the poison
container. Both only ever call :func:`process_stored_event`, which holds the event's lease and decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.context import AppContext
from shared.events.handlers import HandlerRegistry
from shared.events.layout import RETRY_PREFIX, poison_path, state_path
from shared.events.model import EventFormatError, normalise_event_id
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_event_processing import (
    ProcessOutcome,
    ProcessResult,
    delete_blob,
    process_stored_event,
    utc_now,
)

__all__ = ["ReplayReport", "replay_poisoned", "retry_due_events"]


@dataclass(frozen=True)
class ReplayReport:
    results: list[ProcessResult] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    remaining: bool = False  # more poisoned events than this call's limit: call again with ...
    continue_after: str | None = None  # ... after=this, so events that failed again are not retaken first

    def to_dict(self) -> dict[str, Any]:
        return {
            "replayed": len(self.results),
            "results": [r.to_dict() for r in self.results],
            "not_found": self.not_found,
            "remaining": self.remaining,
            "continue_after": self.continue_after,
        }


def retry_due_events(
    context: AppContext,
    *,
    registry: HandlerRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
    limit: int = 100,
) -> list[ProcessResult]:
    """Process the events whose next attempt is due (what the retry timer runs)."""
    settings = context.settings.section(BusinessEventSettings)
    container = context.store.container(settings.state_container)
    now = clock().timestamp()
    due: list[tuple[str, str]] = []
    for blob in container.list_blobs(name_starts_with=RETRY_PREFIX, include=["metadata"]):
        metadata = blob.metadata or {}
        if metadata.get("blob") and float(metadata.get("due", "0")) <= now:
            due.append((blob.name, metadata["blob"]))
            if len(due) >= limit:
                break
    results = []
    for marker, raw_blob in due:
        result = process_stored_event(context, raw_blob, registry=registry, mode="retry", clock=clock)
        if result.outcome in (
            ProcessOutcome.ALREADY_PROCESSED,
            ProcessOutcome.POISONED,
            ProcessOutcome.MISSING,
        ):
            delete_blob(context, settings.state_container, marker)  # a leftover marker of a finished event
        results.append(result)
    return results


def replay_poisoned(
    context: AppContext,
    event_id: str | None = None,
    *,
    registry: HandlerRegistry | None = None,
    force: bool = False,
    limit: int = 100,
    after: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> ReplayReport:
    """Process poisoned events again: one (by EventId) or all (up to ``limit`` per call, in name order,
    starting after the poison record named ``after``: the previous call's ``continue_after``).

    ``force`` also replays an event that is not poisoned (e.g. already processed), running every handler.
    """
    settings = context.settings.section(BusinessEventSettings)
    store = context.store
    targets: list[str] = []
    if event_id is not None:
        try:
            wanted = normalise_event_id(event_id)
        except EventFormatError:
            return ReplayReport(not_found=[event_id[:100]])
        found = store.read_json(settings.poison_container, poison_path(wanted))
        if found is None and force:
            found = store.read_json(settings.state_container, state_path(wanted))
            if found is not None:
                targets.append(str(found.value.get("subject", "")))
        elif found is not None:
            targets.append(str(found.value.get("blob", "")))
        if not targets:
            return ReplayReport(not_found=[wanted])
    else:
        listing = store.container(settings.poison_container).list_blobs(include=["metadata"])
        last: str | None = None
        for blob in listing:
            if after is not None and blob.name <= after:
                continue
            if len(targets) == limit:
                return _replay(context, targets, registry, clock, force, remaining=True, continue_after=last)
            if (blob.metadata or {}).get("blob"):
                targets.append(blob.metadata["blob"])
                last = blob.name
    return _replay(context, targets, registry, clock, force, remaining=False)


def _replay(
    context: AppContext,
    targets: list[str],
    registry: HandlerRegistry | None,
    clock: Callable[[], datetime],
    force: bool,
    *,
    remaining: bool,
    continue_after: str | None = None,
) -> ReplayReport:
    results = [
        process_stored_event(context, raw, registry=registry, mode="replay", force=force, clock=clock)
        for raw in targets
    ]
    return ReplayReport(results=results, remaining=remaining, continue_after=continue_after)
