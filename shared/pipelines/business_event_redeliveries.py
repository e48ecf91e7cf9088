"""Redeliveries of a stored business event: recorded on receipt, counted by the overview.

D365 delivers at least once, and its most common duplicate is the *same* ``EventId`` sent again (a retry
after a timeout, at-least-once delivery). The receiver's conditional create fails for it and it is answered
200 "duplicate" without storing anything; this module leaves a durable trace of each such delivery so the
operations page and ``ops status`` can show "redelivered ×N".

The record: one tiny blob per redelivery,
``{state}/business-events-redeliveries/{EventId}/{receipt time}-{random}.json``, written with one request.

- **Exact under concurrency**: every redelivery writes a blob of its own (a unique name), so concurrent
  copies never compete; there is no read, no ETag and no retry loop. (A single counter blob updated with
  ETag-conditional writes needs a read plus a write per delivery and loses counts once a burst of
  concurrent copies exhausts its bounded retries.)
- **Cheap on D365's 10 s path**: only duplicates pay it, one small write after the failed create, one
  attempt, within what is left of ``BUSINESS_EVENTS_STORE_TIMEOUT_SECONDS``.
- **Processing is never triggered again**: the raw blob the blob trigger watches is left alone — not its
  content, metadata or tags (the tags are the sweep's index, which processing replaces wholesale).
- **The answer never depends on it**: a write that fails or has no time left is logged
  (``EVENT_REDELIVERY_NOT_RECORDED``) and the delivery is still answered 200 "duplicate".

So the count is a **lower bound**: deliveries = 1 (the one stored) + the redeliveries recorded; it is exact
unless a record was not written (each such case is logged) or the instance died between the failed create
and the record. A delivery that got a 503 (storage down) stored nothing and is not a delivery here: D365
sends it again and that one counts.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

from shared.context import AppContext
from shared.events.model import BusinessEvent, iso
from shared.events.settings import BusinessEventSettings
from shared.logs import log_event
from shared.storage import JSON_CONTENT

__all__ = ["REDELIVERIES_PREFIX", "record_redelivery", "redeliveries_prefix"]

log = logging.getLogger(__name__)

REDELIVERIES_PREFIX = "business-events-redeliveries/"
#: Less time than this left of the store budget: not worth starting a write that cannot finish.
_MIN_SECONDS = 0.2


def redeliveries_prefix(event_id: str) -> str:
    """The state-container folder holding one blob per redelivery of ``event_id``."""
    return f"{REDELIVERIES_PREFIX}{event_id}/"


def _record_name(event: BusinessEvent, received_at: datetime) -> str:
    # receipt time first, so a listing is in receipt order; the random part keeps concurrent copies apart
    stamp = received_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{redeliveries_prefix(event.event_id)}{stamp}-{uuid.uuid4().hex[:12]}.json"


def _why(exc: Exception) -> str:
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = getattr(exc, "error_code", None)  # set by the storage SDK: an enum, or text
        code = getattr(code, "value", code) or exc.reason or ""
        return f"storage answered {exc.status_code} {code}".rstrip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def record_redelivery(
    context: AppContext,
    settings: BusinessEventSettings,
    event: BusinessEvent,
    received_at: datetime,
    *,
    deadline: float,
) -> bool:
    """Record one redelivery of a stored event; False (logged, never raised) when it could not be.

    ``deadline`` is a ``time.monotonic()`` instant: the receiver's store budget, so the answer to D365
    is not held up past it.
    """
    name = _record_name(event, received_at)
    body = json.dumps(
        {"event_id": event.event_id, "received_at": iso(received_at), "source": str(event.source)},
        separators=(",", ":"),
    ).encode()
    blob = context.store.service.get_blob_client(settings.state_container, name)
    created_container = False
    reason = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining < _MIN_SECONDS:
            reason = "no time left of the store budget"
            break
        limits: dict[str, Any] = {
            "timeout": max(1, int(remaining)),
            "connection_timeout": min(2.0, remaining),
            "read_timeout": remaining,
            "retry_total": 0,
        }
        try:
            blob.upload_blob(body, overwrite=True, content_settings=JSON_CONTENT, **limits)
            return True
        except ResourceNotFoundError:  # the state container does not exist yet (nothing processed so far)
            if created_container:
                reason = "the state container could not be created"
                break
            created_container = True
            try:
                context.store.service.get_container_client(settings.state_container).create_container(
                    **limits
                )
            except ResourceExistsError:
                pass
            except AzureError as exc:
                reason = _why(exc)
                break
        except (AzureError, OSError, ValueError) as exc:  # whatever it is, the answer stays "duplicate"
            reason = _why(exc)
            break
    log_event(
        log,
        "EVENT_REDELIVERY_NOT_RECORDED",
        logging.WARNING,
        f"a redelivery of a stored event was answered duplicate but not counted: {reason[:300]}",
        event_id=event.event_id,
    )
    return False
