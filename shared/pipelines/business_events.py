"""Business events in: receive (validate, store durably once, answer) — processing is decoupled.

``receive_events`` is what the HTTP trigger runs for every POST from D365 (or Event Grid). It answers only
after the event is in blob storage, and stores it with one conditional create at a path built from the
event itself, so that write is also the duplicate check: a redelivered ``EventId`` finds the blob and is
answered 200 "duplicate" (D365 stops retrying) without being processed again; one small write records
that redelivery for the operations overview (``business_event_redeliveries``). Nothing else happens on
receipt: a blob trigger on the raw container processes each stored event once
(``process_stored_event``), so a slow or failing handler never makes D365 retry or lose an event. Should
that trigger never fire for a blob, the retry timer's sweep processes it (``business_event_sweep``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

from shared.context import AppContext
from shared.events.body import BodyError, read_body
from shared.events.eventgrid import Item
from shared.events.layout import pending_tags, raw_path
from shared.events.model import BusinessEvent, EventFormatError, iso, parse_event
from shared.events.settings import BusinessEventSettings
from shared.events.validate import Rejection, check_event, check_request, check_secret
from shared.logs import log_event
from shared.pipelines.business_event_processing import ProcessOutcome, ProcessResult, process_stored_event
from shared.pipelines.business_event_redeliveries import record_redelivery
from shared.pipelines.business_event_replay import ReplayReport, replay_poisoned, retry_due_events
from shared.pipelines.business_event_sweep import (
    RetryTimerReport,
    SweepReport,
    retry_and_sweep,
    sweep_unprocessed_events,
)
from shared.pipelines.business_event_tags import tag_refusal
from shared.redact import redact_text
from shared.storage import JSON_CONTENT

__all__ = [
    "ProcessOutcome",
    "ProcessResult",
    "ReceiveResult",
    "ReplayReport",
    "RetryTimerReport",
    "SweepReport",
    "process_stored_event",
    "receive_events",
    "replay_poisoned",
    "retry_and_sweep",
    "retry_due_events",
    "sweep_unprocessed_events",
]

log = logging.getLogger(__name__)

_BATCH_WORKERS = 8
_executor: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class ReceiveResult:
    """The HTTP answer: status code and JSON body (one result per event for a batch)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _rejected(rejection: Rejection) -> ReceiveResult:
    log_event(
        log,
        "EVENT_REQUEST_REJECTED",
        logging.WARNING,
        rejection.message,
        status=rejection.status,
        error=rejection.code,
    )
    return ReceiveResult(rejection.status, rejection.body())


def _storage_metadata(event: BusinessEvent, received_at: datetime) -> dict[str, str]:
    """What the event's bytes do not say: when and how it came (each header costs on the hot path)."""
    metadata = {"received_at": iso(received_at), "source": str(event.source)}
    if not event.exact_original:
        metadata["original"] = "reserialized"
    metadata.update({f"envelope_{name}": value for name, value in event.envelope.items()})
    return metadata


def _store(
    context: AppContext, settings: BusinessEventSettings, event: BusinessEvent, received_at: datetime
) -> bool:
    """Create the raw blob once; False when it already existed (a duplicate delivery).

    The storage SDK's own retries back off for 15 s and more, past D365's 10 s timeout, so each call here
    gets one attempt within ``store_timeout_seconds``; on failure the caller answers 503 and D365 retries.
    """
    budget = settings.store_timeout_seconds
    limits: dict[str, Any] = {
        "timeout": max(1, int(budget)),
        "connection_timeout": min(2.0, budget),
        "read_timeout": budget,
        "retry_total": 0,
    }
    blob = context.store.service.get_blob_client(settings.raw_container, raw_path(event))
    # Tags ride on the same request (no extra write on this hot path): the sweep's index of events whose
    # processing has not begun, should their blob trigger never fire (``business_event_sweep``).
    tags = pending_tags(received_at) if settings.sweep_enabled and not tag_refusal.active() else None
    created_container = False
    refusal: HttpResponseError | None = None
    while True:
        try:
            blob.upload_blob(
                event.original,
                overwrite=False,  # If-None-Match: * : the first delivery wins, later ones learn it exists
                metadata=_storage_metadata(event, received_at),
                content_settings=JSON_CONTENT,
                tags=tags,
                **limits,
            )
        except ResourceExistsError:
            return False
        except ResourceNotFoundError:  # the container does not exist yet (first event ever)
            if created_container:
                raise
            created_container = True
            with suppress(ResourceExistsError):
                context.store.service.get_container_client(settings.raw_container).create_container(**limits)
            continue
        except HttpResponseError as exc:
            # Tags need rights a role may lack (403) or an account may not have (400: hierarchical
            # namespace). Storing the event matters more than the sweep's index: store it without them.
            if tags is None or exc.status_code not in (400, 403):
                raise
            tags, refusal = None, exc
            continue
        if refusal is not None:
            tag_refusal.note(refusal)
        return True


def _receive_item(
    context: AppContext, settings: BusinessEventSettings, item: Item, received_at: datetime
) -> tuple[int, dict[str, Any]]:
    if item.error is not None:
        log_event(
            log, "EVENT_REJECTED", logging.WARNING, item.error.message, status=400, error=item.error.code
        )
        return 400, Rejection(400, item.error.code, item.error.message).body()
    try:
        event = parse_event(
            item.fields,
            item.original,
            source=item.source,
            exact_original=item.exact_original,
            envelope=item.envelope,
        )
    except EventFormatError as exc:
        log_event(log, "EVENT_REJECTED", logging.WARNING, exc.message, status=400, error=exc.code)
        return 400, Rejection(400, exc.code, exc.message).body()
    rejection = check_event(event, settings)
    if rejection is not None:
        log_event(
            log,
            "EVENT_REJECTED",
            logging.WARNING,
            rejection.message,
            event_id=event.event_id,
            status=rejection.status,
            error=rejection.code,
        )
        return rejection.status, {**rejection.body(), "eventId": event.event_id}
    started = time.monotonic()
    try:
        created = _store(context, settings, event, received_at)
    except AzureError as exc:
        log_event(
            log,
            "EVENT_STORE_FAILED",
            logging.ERROR,
            f"could not be stored: {redact_text(str(exc))[:500]}",
            event_id=event.event_id,
        )
        return 503, {
            "status": "error",
            "error": "storage_unavailable",
            "message": "the event could not be stored now; send it again",
            "eventId": event.event_id,
        }
    if not created:  # a redelivery: counted for the overview, within the same budget, never failing
        deadline = started + settings.store_timeout_seconds
        record_redelivery(context, settings, event, received_at, deadline=deadline)
    status = "stored" if created else "duplicate"
    log_event(
        log,
        "EVENT_RECEIVED",
        logging.INFO,
        f"business event {status}",
        event_id=event.event_id,
        status=status,
        business_event=event.event_key,
        legal_entity=event.legal_entity_key,
        control_number=event.control_number,
    )
    return 200, {
        "status": status,
        "eventId": event.event_id,
        "businessEventId": event.business_event_id,
        "legalEntity": event.legal_entity,
        "controlNumber": event.control_number,
    }


def _map_items(
    function: Callable[[Item], tuple[int, dict[str, Any]]], items: list[Item]
) -> list[tuple[int, dict[str, Any]]]:
    global _executor
    if len(items) == 1:
        return [function(items[0])]
    if _executor is None:  # shared by every request of this process; threads start on demand
        _executor = ThreadPoolExecutor(max_workers=_BATCH_WORKERS, thread_name_prefix="business-events")
    return list(_executor.map(function, items))


def _batch_answer(results: list[tuple[int, dict[str, Any]]]) -> ReceiveResult:
    listed = [{"index": index, **body} for index, (_, body) in enumerate(results)]
    statuses = [status for status, _ in results]
    stored = sum(1 for _, body in results if body.get("status") == "stored")
    duplicates = sum(1 for _, body in results if body.get("status") == "duplicate")
    if all(status == 200 for status in statuses):
        return ReceiveResult(
            200, {"status": "accepted", "stored": stored, "duplicates": duplicates, "results": listed}
        )
    failed = len(statuses) - stored - duplicates
    # 503 first: the sender should retry the whole batch (stored events then come back as duplicates).
    status = 503 if 503 in statuses else next(s for s in statuses if s != 200)
    message = f"{failed} of {len(statuses)} events were not accepted; the others were stored"
    return ReceiveResult(
        status, {"status": "rejected", "error": "batch_incomplete", "message": message, "results": listed}
    )


def receive_events(
    context: AppContext,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: Callable[[], datetime] | None = None,
) -> ReceiveResult:
    """Validate and durably store the events of one request; never waits for their processing."""
    settings = context.settings.section(BusinessEventSettings)
    lowered = {name.lower(): value for name, value in headers.items()}
    unauthorized = check_secret(lowered, settings)
    # An Event Grid handshake may come without custom delivery headers (UNCONFIRMED): it only echoes a code,
    # so it is answered without the shared secret; nothing else is.
    handshake = lowered.get("aeg-event-type", "").lower() == "subscriptionvalidation"
    if unauthorized is not None and not handshake:
        return _rejected(unauthorized)
    rejection = check_request(lowered, body, settings)
    if rejection is not None:
        return _rejected(rejection)
    try:
        parsed = read_body(body)
    except BodyError as exc:
        return _rejected(Rejection(400, exc.code, exc.message))
    if parsed.validation_code is not None:
        log.info("Event Grid subscription validation answered")
        return ReceiveResult(200, {"validationResponse": parsed.validation_code})
    if unauthorized is not None:
        return _rejected(unauthorized)
    received_at = (now or (lambda: datetime.now(UTC)))()
    results = _map_items(lambda item: _receive_item(context, settings, item, received_at), parsed.items)
    if not parsed.batch:
        status, answer = results[0]
        return ReceiveResult(status, answer)
    return _batch_answer(results)
