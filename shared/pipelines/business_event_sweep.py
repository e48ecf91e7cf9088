"""Business events the blob trigger missed: a bounded sweep on the retry timer processes them.

The receiver stores each event with one conditional create and leaves the rest to a blob trigger. The
polling trigger is best effort (it may skip a blob after a host crash or under load), an Event Grid
subscription can be missing or broken: then a stored event would wait forever. The sweep finds stored
events with **no processing record** older than ``BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS`` and runs them
through ``process_stored_event`` — the same lease-guarded, record-checked, idempotent path as the trigger.

How it finds them without listing the raw container (millions of blobs): **blob index tags**.

- The receiver's conditional create carries the tags ``received=<receipt time>`` and
  ``processing=pending`` in the same request — no extra write, no extra latency on D365's 10 s path.
- Processing re-tags the blob ``processing=started`` right after it first writes the event's status
  record (never before: a "started" tag without a record would hide the event). Tags do not change the
  blob's ETag or last-modified time, so no trigger fires again.
- A sweep asks the storage service's tag index (Find Blobs by Tags) for
  ``processing = 'pending' AND received < now - min age``. Only events that never began processing come
  back, so a run's cost follows the number of *missed* events, not the container's size, and needs no
  cursor or checkpoint to lose or to get wrong. At most ``BUSINESS_EVENTS_SWEEP_BATCH`` per run; the rest
  come back in the next run.
- For each one it reads the status record: present (processing began but the re-tag was lost, or the tag
  index lags — it is eventually consistent, which the min age also covers) → only re-tag; absent →
  ``process_stored_event(mode="sweep")``, which takes the event's lease and checks the record again, so a
  trigger firing at the same moment, or a second sweep, never runs the handlers twice. The sweep itself
  also holds a lease (``state/business-events-sweep.lock``) so two instances do not do the same work.

Why not the alternatives: a per-event "received" index blob costs a second write on the receiver's hot
path; listing by last-modified with a checkpoint lists the whole container every run; listing the raw
paths by date misses late deliveries (the date is the event's, not the receipt's). Limits: blob index
tags need a storage account without hierarchical namespace (``BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS=0``
turns tags and sweep off) and the identity needs tag rights (Storage Blob Data Owner has them). Where
storage refuses tags, events are stored and processed without them — receipt never depends on the safety
net — and ``EVENT_TAGS_REFUSED`` says so (``business_event_tags``). Events stored before the sweep existed
carry no tags and are not swept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import HttpResponseError

from shared.context import AppContext
from shared.events.handlers import HandlerRegistry
from shared.events.layout import PENDING_TAGS_QUERY, SWEEP_LOCK, state_path, tag_time
from shared.events.settings import BusinessEventSettings
from shared.logs import log_event
from shared.pipelines.business_event_processing import (
    ProcessOutcome,
    ProcessResult,
    process_stored_event,
    utc_now,
)
from shared.pipelines.business_event_replay import retry_due_events
from shared.pipelines.business_event_tags import mark_started, tag_refusal
from shared.storage import LeaseUnavailableError

__all__ = ["RetryTimerReport", "SweepReport", "retry_and_sweep", "sweep_unprocessed_events"]

log = logging.getLogger(__name__)

_LOCK_SECONDS = 60


@dataclass(frozen=True)
class SweepReport:
    """One sweep run: what it processed, how many it found already begun, and why it did nothing."""

    results: list[ProcessResult] = field(default_factory=list)
    already_started: int = 0  # a status record existed: only the tag was repaired
    more: bool = False  # the batch limit was reached: the next run continues
    skipped: str = ""  # "disabled" (min age 0), "busy" (another sweep holds the lock), "tags_refused"

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "already_started": self.already_started,
            "more": self.more,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class RetryTimerReport:
    """The retry timer's run: due retries, then the sweep."""

    retried: list[ProcessResult]
    swept: SweepReport


def sweep_unprocessed_events(
    context: AppContext,
    *,
    registry: HandlerRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> SweepReport:
    """Process stored events that have no processing record ``sweep_min_age_seconds`` after receipt."""
    settings = context.settings.section(BusinessEventSettings)
    if not settings.sweep_enabled:
        return SweepReport(skipped="disabled")
    try:
        with context.store.lease(settings.state_container, SWEEP_LOCK, seconds=_LOCK_SECONDS):
            return _sweep(context, settings, registry, clock)
    except LeaseUnavailableError:
        return SweepReport(skipped="busy")


def _sweep(
    context: AppContext,
    settings: BusinessEventSettings,
    registry: HandlerRegistry | None,
    clock: Callable[[], datetime],
) -> SweepReport:
    now = clock()
    cutoff = tag_time(now - timedelta(seconds=settings.sweep_min_age_seconds))
    container = context.store.container(settings.raw_container)
    # No results_per_page: Azurite applies it before the filter and then drops the continuation. The
    # service's default page (up to 5000, the batch maximum) is read once; islice stops at the batch.
    found = container.find_blobs_by_tags(PENDING_TAGS_QUERY.format(cutoff=cutoff))
    try:
        hits = list(islice(found, settings.sweep_batch))
    except HttpResponseError as exc:
        if exc.status_code not in (400, 403):
            raise
        tag_refusal.note(exc)  # no rights to query tags, or an account without them: nothing to find
        return SweepReport(skipped="tags_refused")
    results: list[ProcessResult] = []
    already_started = 0
    for hit in hits:
        event_id = PurePosixPath(hit.name).stem
        if context.store.read_json(settings.state_container, state_path(event_id)) is not None:
            mark_started(context, settings, hit.name)  # processing began; its re-tag was lost
            already_started += 1
            continue
        result = process_stored_event(context, hit.name, registry=registry, mode="sweep", clock=clock)
        results.append(result)
        if result.outcome is not ProcessOutcome.BUSY:
            log_event(
                log,
                "EVENT_SWEPT",
                logging.WARNING,
                f"stored event had no processing record {settings.sweep_min_age_seconds:g} s after "
                f"receipt (its blob trigger did not run); processed by the sweep: {result.outcome}",
                event_id=result.event_id or event_id,
                blob=result.blob,
                received=(hit.tags or {}).get("received", ""),
                outcome=str(result.outcome),
            )
    # A full batch may have more behind it: the next run (30 s) continues; nothing here is skipped for good.
    return SweepReport(results, already_started, more=len(hits) == settings.sweep_batch)


def retry_and_sweep(
    context: AppContext,
    *,
    registry: HandlerRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RetryTimerReport:
    """What the retry timer runs: the attempts that are due, then the sweep for missed events."""
    retried = retry_due_events(context, registry=registry, clock=clock)
    swept = sweep_unprocessed_events(context, registry=registry, clock=clock)
    return RetryTimerReport(retried, swept)
